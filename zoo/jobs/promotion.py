"""What a fine-tune job does with the version it published: label it ``candidate``, and, by the
job's ``promote`` rule, also ``stable``, so that it is served to requests without a version.

- ``never`` (the default): a repository that never used labels keeps serving the newest
  version (the candidate) by default, as before labels existed, while one where someone
  promoted a ``stable`` version keeps serving it until someone promotes the candidate.
- ``always``: the candidate becomes stable at once.
- ``if_better``: the candidate becomes stable when its test accuracy is above the current
  stable version's on the same test images (the job's test split, both computed by the ONNX
  files themselves), or when no version is stable yet; the job says why it did or did not.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from zoo.errors import InvalidArgument
from zoo.labels import CANDIDATE, STABLE
from zoo.repository import ModelVersion, Repository

PROMOTE_RULES = ("never", "always", "if_better")


def validate_promote(rule: object) -> str:
    if rule not in PROMOTE_RULES:
        raise InvalidArgument(f"promote must be one of {list(PROMOTE_RULES)}; received {rule!r}")
    return str(rule)


@dataclass(frozen=True)
class Promotion:
    """The labels a job set on its version, and why it did or did not make it stable."""

    labels: tuple[str, ...]
    reason: str

    @property
    def promoted(self) -> bool:
        return STABLE in self.labels


def decide(
    rule: str,
    version: int,
    stable: int | None,
    accuracy: float | None,
    stable_accuracy: Callable[[], float | None],
) -> tuple[bool, str]:
    """(make ``version`` stable?, why). ``accuracy``: the candidate's test accuracy (None: no
    report); ``stable_accuracy``: the stable version's on the same test images, computed only
    when needed (None: it cannot be tested on them)."""
    if rule == "never":
        kept = f"stable stays at version {stable}" if stable else "no version is stable"
        return False, f"promote is never: version {version} is the candidate; {kept}"
    if rule == "always":
        return True, f"promote is always: version {version} is stable"
    if stable is None:
        return True, f"no version was stable: version {version} is now"
    if accuracy is None:
        return False, f"version {version} has no test report; stable stays at version {stable}"
    other = stable_accuracy()
    if other is None:
        return False, (
            f"stable version {stable} cannot be tested on this job's test images (its classes "
            f"differ); stable stays at version {stable}"
        )
    if accuracy > other:
        return True, (
            f"test accuracy {accuracy:.4f} is above stable version {stable}'s {other:.4f} on "
            f"the same test images: version {version} is stable"
        )
    return False, (
        f"test accuracy {accuracy:.4f} is not above stable version {stable}'s {other:.4f} on "
        f"the same test images; stable stays at version {stable}"
    )


def label_published(
    repository: Repository,
    model: str,
    version: int,
    rule: str,
    job_id: str,
    *,
    accuracy: float | None = None,
    stable_accuracy: Callable[[ModelVersion], float | None] | None = None,
) -> Promotion:
    """Label a job's published version ``candidate``, and ``stable`` if ``rule`` says so."""
    by, peer = f"job {job_id}", "worker"
    repository.set_label(model, CANDIDATE, version, by=by, peer=peer)
    stable = repository.labels(model).stable

    def measure_stable() -> float | None:
        if stable is None or stable_accuracy is None:
            return None
        return stable_accuracy(repository.get(model, stable))

    promote, reason = decide(rule, version, stable, accuracy, measure_stable)
    if promote:
        repository.set_label(model, STABLE, version, by=by, peer=peer)
        return Promotion((CANDIDATE, STABLE), reason)
    return Promotion((CANDIDATE,), reason)
