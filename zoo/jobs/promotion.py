"""What a fine-tune job does with the version it published: label it ``candidate``, and with
``promote: always`` also ``stable``, so that it is served to requests without a version.

The default is ``never``: a repository that never used labels keeps serving the newest version
(the candidate) by default, as before labels existed, while one where someone promoted a
``stable`` version keeps serving it until someone promotes the candidate. ``if_better``
(compare test accuracy against the current stable on the same test split) needs the
evaluation report on a test split, which is not part of this version; it is refused.
"""

from __future__ import annotations

from zoo.errors import InvalidArgument
from zoo.labels import CANDIDATE, STABLE
from zoo.repository import Repository

PROMOTE_RULES = ("never", "always")


def validate_promote(rule: object) -> str:
    if rule == "if_better":
        raise InvalidArgument(
            "promote 'if_better' is not available yet: it needs the evaluation report on a "
            "test split; use 'never' (then `zoo models promote`) or 'always'"
        )
    if rule not in PROMOTE_RULES:
        raise InvalidArgument(f"promote must be one of {list(PROMOTE_RULES)}; received {rule!r}")
    return str(rule)


def label_published(
    repository: Repository, model: str, version: int, rule: str, job_id: str
) -> list[str]:
    """Label a job's published version; returns the labels set, in the order they were set."""
    labels = [CANDIDATE, STABLE] if rule == "always" else [CANDIDATE]
    for label in labels:
        repository.set_label(model, label, version, by=f"job {job_id}", peer="worker")
    return labels
