"""What the Circuit pane offers and sends: the shipped task names, the default
circuit sites, and the typed task and site list as `circuit.find` takes them.

Notes
- Tasks are offered by name (the stem of `weights/tasks/*.jsonl`: `was_were`);
  the engine resolves a shipped name itself, so a name is sent as typed, and a
  path is made absolute like an SAE path (`tui.sae_paths.resolve_typed`).
- The default sites are the shipped circuit sites (`CIRCUIT_SITES`, model order)
  that exist under weights/saes; with fewer than two of them, the Ablation pane's
  pair (resid_mid, mlp_out) instead, which every checkout has.
- The site list is typed as a shell would split it (quotes for paths with spaces),
  and shown back the same way.
"""

from __future__ import annotations

import shlex
from pathlib import Path

import msgspec

from engine.protocol import CircuitFindParams
from tui.sae_paths import default_downstream, default_upstream, resolve_typed, saes_dir

CIRCUIT_SITES = ("resid_pre-topk", "attn_out-topk", "mlp_out-topk")  # upstream first
DEFAULT_TASK = "was_were"
# the engine's own default, shown in the empty field (an empty field sends none)
DEFAULT_POINTS = next(f.default for f in msgspec.structs.fields(CircuitFindParams) if f.name == "points")


def tasks_dir() -> Path:
    return saes_dir().parent / "tasks"


def shipped_tasks() -> list[str]:
    """Task names under weights/tasks, by name; [] when there are none."""
    folder = tasks_dir()
    return sorted(p.stem for p in folder.glob("*.jsonl")) if folder.is_dir() else []


def default_sites() -> list[str]:
    """The shipped circuit sites that exist here, upstream first (see the notes)."""
    found = [str(saes_dir() / name) for name in CIRCUIT_SITES if (saes_dir() / name / "cfg.json").is_file()]
    return found if len(found) >= 2 else [default_upstream(), default_downstream()]


def task_param(typed: str, engine_is_local: bool) -> str:
    """The task as sent: a name as typed, a path (it has a `/` or ends in `.jsonl`)
    made absolute for an engine on this machine."""
    typed = typed.strip()
    if "/" in typed or typed.endswith(".jsonl") or typed.startswith("~"):
        return resolve_typed(typed, engine_is_local)
    return typed


def parse_sites(typed: str, engine_is_local: bool) -> list[str]:
    """SAE folders from a typed list (split like a shell: spaces, quotes); raises
    ValueError for an unclosed quote."""
    return [resolve_typed(p, engine_is_local) for p in shlex.split(typed.replace(",", " "))]


def format_sites(paths: list[str]) -> str:
    """The list as it is typed (`parse_sites` reads it back)."""
    return shlex.join(paths)
