"""The architecture's one rule: tui/ never loads torch & co; engine/ never loads textual.

Each module is imported in a fresh interpreter, and `sys.modules` is checked, so
an indirect import (through another module) is caught too.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
HEAVY = ["torch", "transformer_lens", "sae_lens", "transformers"]


def modules(package: str) -> list[str]:
    out = []
    for path in sorted((REPO / package).rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        if rel.name == "__main__":
            continue
        out.append(".".join(p for p in rel.parts if p != "__init__"))
    return out


def loaded_after_import(module: str, probes: list[str]) -> list[str]:
    code = (f"import sys, json; import {module}; "
            f"print(json.dumps([m for m in {probes!r} if m in sys.modules]))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("module", modules("tui"))
def test_tui_never_loads_the_heavy_libraries(module):
    assert loaded_after_import(module, HEAVY) == []


@pytest.mark.parametrize("module", modules("engine"))
def test_engine_never_loads_textual(module):
    assert loaded_after_import(module, ["textual"]) == []


def test_no_source_file_imports_across_the_boundary():
    """A static check as well, for imports hidden inside functions."""
    import re

    bad = []
    for path in (REPO / "tui").rglob("*.py"):
        bad += [f"{path}: {l}" for l in path.read_text().splitlines()
                if re.match(r"\s*(import|from)\s+(torch|transformer_lens|sae_lens|transformers)\b", l)]
    for path in (REPO / "engine").rglob("*.py"):
        bad += [f"{path}: {l}" for l in path.read_text().splitlines()
                if re.match(r"\s*(import|from)\s+textual\b", l)]
    assert bad == []
