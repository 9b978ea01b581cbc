"""Benchmarks print their figures (run with `make bench`, i.e. pytest -s tests/bench).

They are not collected by `make test`; timings are reported, never asserted.
"""

import json
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
RESULTS = Path(__file__).parent / "results"


@pytest.fixture
def report():
    """Print a figure set and keep it in tests/bench/results/<name>.json."""
    def _report(name: str, figures: dict) -> None:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{name}.json").write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\n[{name}]")
        for k, v in figures.items():
            print(f"  {k}: {v}")
    return _report
