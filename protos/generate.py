"""Generate the Python modules for protos/*.proto.

    python -m protos.generate           # write the modules next to the .proto files
    python -m protos.generate --check   # exit 1 if the committed modules are stale

Protos are compiled with the repository root as the include path, so generated code
imports as ``from protos import model_config_pb2``. The generated modules then register their
descriptors in ``protos.pool.POOL`` instead of protobuf's default pool (see that module: it lets
the SDK and tritonclient share a process); this rewrite is part of generation, so ``--check``
compares the rewritten modules.
"""

from __future__ import annotations

import filecmp
import sys
import tempfile
from importlib import resources
from pathlib import Path

from grpc_tools import protoc

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
GENERATED = ("*_pb2.py", "*_pb2.pyi", "*_pb2_grpc.py")


def generate(out: Path) -> None:
    """Compile every protos/*.proto into ``out`` (as ``out/protos/...``)."""
    well_known = resources.files("grpc_tools") / "_proto"
    sources = sorted(str(p) for p in PROTOS.glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"-I{well_known}"]
    args += [f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}", *sources]
    if protoc.main(args) != 0:
        sys.exit("protoc failed")
    for module in sorted((out / "protos").glob("*_pb2.py")):
        module.write_text(_private_pool(module.read_text()))


DEFAULT_POOL = "DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile("
INSERTION = "# @@protoc_insertion_point(imports)\n"


def _private_pool(source: str) -> str:
    """Register the module's file in ``protos.pool.POOL`` rather than the default pool."""
    if source.count(DEFAULT_POOL) != 1 or source.count(INSERTION) != 1:
        sys.exit("protoc's output changed shape: update protos/generate.py's pool rewrite")
    source = source.replace(DEFAULT_POOL, "DESCRIPTOR = _protos_pool.POOL.AddSerializedFile(")
    return source.replace(INSERTION, INSERTION + "from protos import pool as _protos_pool\n")


def _generated(directory: Path) -> set[str]:
    return {p.name for pattern in GENERATED for p in directory.glob(pattern)}


def check() -> int:
    """Return 0 if the committed modules match fresh output, else 1 with the stale names."""
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / "protos"
        generate(Path(tmp))
        names = _generated(fresh) | _generated(PROTOS)
        stale = sorted(
            f"protos/{name}"
            for name in names
            if not (fresh / name).is_file()
            or not (PROTOS / name).is_file()
            or not filecmp.cmp(fresh / name, PROTOS / name, shallow=False)
        )
    if stale:
        print("stale generated modules; run `python -m protos.generate`:", file=sys.stderr)
        for name in stale:
            print(f"  {name}", file=sys.stderr)
        return 1
    print("generated protocol modules are up to date")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check()
    if argv:
        sys.exit("usage: python -m protos.generate [--check]")
    generate(ROOT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
