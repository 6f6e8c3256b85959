"""Mutation testing of the core with Cosmic Ray: `make mutation [MODULES="records retry"]`.

Each target of mutation/targets.toml names one module and the fast tests that cover it.
The working tree (tracked and untracked, not ignored files) is copied to a scratch tree, so
the mutants never touch the checkout; the tests run there with PYTHONPATH pointing at the
copy, so a server process a test starts imports the mutated module too. For each target:
`cosmic-ray init`, the operator filter, a baseline run (the tests must pass unmutated), then
`cosmic-ray exec`. The report (score per module, each survivor with its diff) is written to
.mutation/report.md; docs/testing.md says how to read it.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class Target:
    name: str
    module: str
    what: str
    tests: list[str]
    timeout: float
    functions: tuple[str, ...] = ()  # only these (qualified names); empty: the whole module


@dataclass
class Outcome:
    target: Target
    mutants: int = 0
    killed: int = 0
    survived: list[dict[str, Any]] | None = None
    incompetent: int = 0
    baseline_s: float = 0.0
    run_s: float = 0.0

    @property
    def score(self) -> float:
        tested = self.killed + len(self.survived or [])
        return 100.0 * self.killed / tested if tested else 0.0


def load_targets(path: Path) -> tuple[list[Target], list[str]]:
    data = tomllib.loads(path.read_text())
    targets = [
        Target(
            name,
            t["module"],
            t["what"],
            list(t["tests"]),
            float(t.get("timeout", 120)),
            tuple(t.get("functions", ())),
        )
        for name, t in data["targets"].items()
    ]
    return targets, list(data["operators"]["exclude"])


def copy_tree(destination: Path) -> None:
    """The checkout as git sees it (tracked and untracked, not ignored), without .git."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode()  # fmt: skip
    if destination.exists():
        shutil.rmtree(destination)
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if source.is_file() and not source.is_symlink():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)


def line_ranges(source: str, functions: tuple[str, ...]) -> list[str]:
    """The lines of the named functions ("name" or "Class.method"), as "first-last"."""
    found: dict[str, str] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = prefix + child.name
                first = min([child.lineno] + [d.lineno for d in child.decorator_list])
                found[name] = f"{first}-{child.end_lineno}"
                visit(child, name + ".")

    visit(ast.parse(source), "")
    missing = sorted(set(functions) - set(found))
    if missing:
        raise SystemExit(f"mutation: no function(s) {missing} in the module")
    return [found[f] for f in functions]


def config_text(target: Target, exclude: list[str], tree: Path) -> str:
    command = [str(BIN / "python"), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
    command += ["-o", "addopts=--strict-markers", *target.tests]
    lines = [
        "[cosmic-ray]",
        f"module-path = {json.dumps(target.module)}",
        f"timeout = {target.timeout}",
        "excluded-modules = []",
        f"test-command = {json.dumps(shlex.join(command))}",
        "[cosmic-ray.distributor]",
        'name = "local"',
        "[cosmic-ray.filters.operators-filter]",
        f"exclude-operators = {json.dumps(exclude)}",
    ]
    if target.functions:
        ranges = line_ranges((tree / target.module).read_text(), target.functions)
        lines += [
            "[cosmic-ray.filters.line-filter.lines]",
            f"{json.dumps(target.module)} = {json.dumps(ranges)}",
        ]
    return "\n".join(lines) + "\n"


def cosmic_ray(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    filters = {"operators": "cr-filter-operators", "lines": "cr-filter-lines"}
    tool = BIN / filters.get(args[0], "cosmic-ray")
    argv = [str(tool), *(args[1:] if args[0] in filters else args)]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)


def test_env(tree: Path, out: Path) -> dict[str, str]:
    # PYTHONPATH: a server a test starts imports the mutated copy too. The served test
    # repository (an export, half a minute) is built by the first run and copied by the others.
    return {**os.environ, "PYTHONPATH": str(tree), "ZOO_TEST_SERVED_CACHE": str(out / "served")}


def prepare(target: Target, exclude: list[str], tree: Path, out: Path) -> int:
    """Write the config, create the session and filter it; the number of mutants to run."""
    config = out / f"{target.name}.toml"
    session = out / f"{target.name}.sqlite"
    config.write_text(config_text(target, exclude, tree))
    session.unlink(missing_ok=True)
    env = test_env(tree, out)
    steps = [("init", str(config), str(session)), ("operators", str(session), str(config))]
    if target.functions:
        steps.append(("lines", str(session), "--config", str(config)))
    for step in steps:
        done = cosmic_ray(*step, cwd=tree, env=env)
        if done.returncode != 0:
            raise SystemExit(f"mutation: {target.name}: {step[0]} failed:\n{done.stderr[-3000:]}")
    dump = cosmic_ray("dump", str(session), cwd=tree, env=env).stdout
    return sum(json.loads(line)[1] is None for line in dump.splitlines())


def run_target(target: Target, exclude: list[str], tree: Path, out: Path) -> Outcome:
    config = out / f"{target.name}.toml"
    session = out / f"{target.name}.sqlite"
    env = test_env(tree, out)
    outcome = Outcome(target)
    prepare(target, exclude, tree, out)
    started = time.monotonic()
    done = cosmic_ray("baseline", str(config), cwd=tree, env=env)
    outcome.baseline_s = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(
            f"mutation: {target.name}: the tests fail without any mutant:\n{done.stderr[-3000:]}"
        )
    # A mutant that deadlocks is killed at the timeout: four baselines (at least 15 s), up to
    # the target's `timeout`, instead of the cap itself for every hang (one batching mutant
    # in seven hangs, and those hangs were half of that target's run).
    timeout = min(target.timeout, max(15.0, 4 * outcome.baseline_s))
    config.write_text(config_text(dataclasses.replace(target, timeout=timeout), exclude, tree))
    print(
        f"mutation: {target.name}: baseline {outcome.baseline_s:.0f} s, timeout {timeout:.0f} s",
        flush=True,
    )
    started = time.monotonic()
    done = cosmic_ray("exec", str(config), str(session), cwd=tree, env=env)
    outcome.run_s = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"mutation: {target.name}: exec failed:\n{done.stderr[-3000:]}")
    dump = cosmic_ray("dump", str(session), cwd=tree, env=env).stdout
    outcome.survived = []
    for line in dump.splitlines():
        item, result = json.loads(line)
        if result is None or result["worker_outcome"] in ("skipped", "no-test"):
            continue
        if result["worker_outcome"] != "normal":  # the mutant broke the run itself
            outcome.incompetent += 1
            continue
        outcome.mutants += 1
        if result["test_outcome"] == "survived":
            (mutation,) = item["mutations"]
            outcome.survived.append({**mutation, "diff": result.get("diff") or ""})
        else:  # killed, or incompetent (the mutant does not import): the tests noticed
            outcome.killed += 1
    if subprocess.run(["git", "diff", "--quiet", "--", target.module], cwd=ROOT).returncode:
        raise SystemExit(f"mutation: {target.module} changed in the checkout during the run")
    return outcome


def changed_line(diff: str) -> str:
    added = [d[1:].strip() for d in diff.splitlines() if d.startswith("+") and d[1:2] != "+"]
    return added[0] if added else ""


def report(outcomes: list[Outcome]) -> str:
    rows = [
        "| Module | Mutants | Killed | Survived | Score | Baseline | Run | Mutants/min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for o in outcomes:
        rate = o.mutants / (o.run_s / 60) if o.run_s else 0.0
        rows.append(
            f"| `{o.target.module}` | {o.mutants} | {o.killed} | {len(o.survived or [])} "
            f"| {o.score:.1f}% | {o.baseline_s:.0f} s | {o.run_s / 60:.1f} min | {rate:.1f} |"
        )
    lines = ["# Mutation report", "", *rows, ""]
    for o in outcomes:
        if not o.survived:
            continue
        lines += [f"## Survivors in `{o.target.module}`", ""]
        for s in sorted(o.survived, key=lambda s: tuple(s["start_pos"])):
            line = s["start_pos"][0]
            lines.append(f"- line {line}, {s['operator_name']}: `{changed_line(s['diff'])}`")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("modules", nargs="*", help="target names (default: all)")
    parser.add_argument("--out", type=Path, default=ROOT / ".mutation")
    parser.add_argument("--plan", action="store_true", help="count the mutants, run nothing")
    # Most of a mutant's time is spent waiting (servers starting, tests' deadlines, hangs
    # running into the timeout): the batching run used 2.6 min of CPU in 15.9 min.
    parser.add_argument(
        "--jobs",
        type=int,
        default=(os.cpu_count() or 1) + 1,
        help="targets run side by side (default: one more than the CPUs)",
    )
    args = parser.parse_args()
    args.out = args.out.resolve()  # the tools run in the copied tree, not here
    targets, exclude = load_targets(Path(__file__).with_name("targets.toml"))
    known = {t.name for t in targets}
    unknown = sorted(set(args.modules) - known)
    if unknown:
        raise SystemExit(f"mutation: unknown target(s) {unknown}; known: {sorted(known)}")
    chosen = [t for t in targets if not args.modules or t.name in args.modules]
    args.out.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(args.out / "served", ignore_errors=True)  # the export code may have changed
    if args.plan:
        tree = args.out / "tree-plan"
        copy_tree(tree)
        for target in chosen:
            print(f"{target.name:12} {target.module:28} {prepare(target, exclude, tree, args.out)}")
        return

    def one(target: Target) -> Outcome:
        tree = args.out / f"tree-{target.name}"  # one copy each: targets run side by side
        copy_tree(tree)
        outcome = run_target(target, exclude, tree, args.out)
        # Each target's survivors as soon as it ends; report.md gathers them at the end.
        (args.out / f"{target.name}.md").write_text(report([outcome]))
        print(
            f"mutation: {target.name}: {outcome.killed}/{outcome.mutants} killed "
            f"({outcome.score:.1f}%) in {outcome.run_s / 60:.1f} min",
            flush=True,
        )
        return outcome

    started = time.monotonic()
    with ThreadPoolExecutor(max(1, args.jobs)) as pool:
        outcomes = list(pool.map(one, chosen))
    text = report(outcomes)
    text += f"\nWall time: {(time.monotonic() - started) / 60:.1f} min, {args.jobs} job(s).\n"
    (args.out / "report.md").write_text(text)
    print(f"mutation: report in {args.out / 'report.md'}")


if __name__ == "__main__":
    main()
