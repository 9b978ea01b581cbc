"""The UI boundary: no tui module pulls in torch, transformer_lens or sae_lens, and
from the engine package only `engine.protocol` (with its parts `protocol_base` and
`protocol_graph`), `engine.figures`, `engine.feature_text` and
`engine.map_draw` (plus the
tiny `engine/__init__`)
is imported. The client stays free of Textual so scripts can use it."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import tui

HEAVY = ("torch", "transformer_lens", "sae_lens", "transformers")
ENGINE_ALLOWED = {"engine", "engine.protocol", "engine.figures", "engine.feature_text", "engine.map_draw",
                  "engine.protocol_base", "engine.protocol_graph"}  # the protocol's own parts, which it re-exports


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


# Dicts of the TUI's own whose keys are strings by nature, not engine results.
OWN_DICTS = {"os.environ", "environ", "self._cursor", "PLACEHOLDERS", "KEYS", "self.styles"}


def string_key_reads(source: str) -> list[str]:
    """Every read `x["key"]` and `x.get("key")` in a module, as `x['key']` text (writes,
    which build request params, are fine)."""
    import ast

    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) \
                and isinstance(node.slice, ast.Constant) and isinstance(node.slice.value, str):
            found.append(f"{ast.unparse(node.value)}[{node.slice.value!r}]")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "get" \
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
            found.append(f"{ast.unparse(node.func.value)}[{node.args[0].value!r}]")
    return found


def test_the_tui_reads_results_as_typed_structs_not_string_keys():
    """Results and events arrive as `engine.protocol` structs: a renamed field is an
    attribute error in tests and type checks, never a silent `None` at run time."""
    assert string_key_reads('r["top"]; r.get("x"); r.top; d[0]; p["a"] = 1') == ["r['top']", "r['x']"]
    offenders = []
    for path in sorted(Path(tui.__file__).parent.rglob("*.py")):
        for read in string_key_reads(path.read_text()):
            if read.split("[")[0] not in OWN_DICTS:
                offenders.append(f"{path.relative_to(Path(tui.__file__).parent.parent)}: {read}")
    assert not offenders, "string keys into results:\n" + "\n".join(offenders)
