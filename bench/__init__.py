"""Benchmarks (`make bench-*`): speed as ratios measured side by side, never timed tests."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent / "tests"


def start_server(*args: Any, **kwargs: Any) -> Any:
    """``zoo serve`` in its own process, started as the tests start it (tests/serving.py:
    ports 0, a ready file); its ``ServerProcess``."""
    if str(TESTS) not in sys.path:
        sys.path.insert(0, str(TESTS))
    from serving import start_server as start

    return start(*args, **kwargs)
