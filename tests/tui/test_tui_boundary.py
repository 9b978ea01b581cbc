"""The UI boundary: no tui module pulls in torch, transformer_lens or sae_lens, and
from the engine package only `engine.protocol` and `engine.figures` (plus the tiny `engine/__init__`)
is imported. The client stays free of Textual so scripts can use it."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tui

HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers")
ENGINE_ALLOWED = {"engine", "engine.protocol", "engine.figures"}


def tui_modules() -> list[str]:
    names = ["tui"]
    for info in pkgutil.walk_packages([str(Path(tui.__file__).parent)], prefix="tui."):
        names.append(info.name)
    return sorted(names)


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, json, importlib; importlib.import_module({module!r}); print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout))


def test_every_tui_module_stays_light():
    # One fresh interpreter importing every module: if any of them (or anything they
    # import) loaded a heavy library, it would be in sys.modules.
    names = tui_modules()
    assert "tui.app" in names and "tui.client" in names
    code = ("import sys, json, importlib\n"
            f"for name in {names!r}:\n"
            "    importlib.import_module(name)\n"
            "print(json.dumps(sorted(sys.modules)))")
    loaded = set(json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                           check=True).stdout))
    heavy = sorted(m for m in loaded if m.split(".")[0] in HEAVY)
    assert not heavy, f"tui imports heavy libraries: {heavy[:10]}"
    engine = sorted(m for m in loaded if m.split(".")[0] == "engine")
    assert set(engine) <= ENGINE_ALLOWED, f"tui imports engine modules other than the protocol: {engine}"


def test_client_has_no_textual():
    loaded = loaded_after_import("tui.client")
    assert not any(m.split(".")[0] == "textual" for m in loaded)
