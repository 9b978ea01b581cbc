"""Where the default SAEs live, as the app offers them: `weights/saes/` of this checkout.

The TUI may not import `engine.paths`, so the folder is found from the `tui`
package's parent (the repository root), with the same `SAESCOPE_WEIGHTS`
override the engine honours.

Notes
- Paths are only suggestions prefilled in the panes' inputs: with a remote engine
  (ssh, TCP) the user types the folders as the engine sees them.
- Paths are absolute, so an engine started in another directory reads the same
  folders; the engine keys open SAEs by the exact string sent.
"""

from __future__ import annotations

import os
from pathlib import Path

from engine.protocol import SAE_RELEASE_PREFIX

REPO_ROOT = Path(__file__).resolve().parent.parent
UPSTREAM_NAME, DOWNSTREAM_NAME = "resid_mid-topk", "mlp_out-topk"


def saes_dir() -> Path:
    return Path(os.environ.get("SAESCOPE_WEIGHTS", REPO_ROOT / "weights")) / "saes"


def default_upstream() -> str:
    """The upstream SAE of the ablation tree (blocks.0.hook_resid_mid)."""
    return str(saes_dir() / UPSTREAM_NAME)


def default_downstream() -> str:
    """The downstream SAE (blocks.0.hook_mlp_out); also the Inspector's first SAE."""
    return str(saes_dir() / DOWNSTREAM_NAME)


def resolve_typed(path: str, engine_is_local: bool) -> str:
    """An SAE path as the user typed it, made absolute against the app's folder (where
    they typed it) when the engine runs here; a remote engine's paths, and releases,
    are sent as typed (the engine reads them on its machine, from its own folder)."""
    path = path.strip()
    if not engine_is_local or not path or path.startswith(SAE_RELEASE_PREFIX):
        return path
    return os.path.abspath(os.path.expanduser(path))


def local_saes() -> list[str]:
    """SAE folders (with a cfg.json) under weights/saes, by name; [] when there are none."""
    root = saes_dir()
    if not root.is_dir():
        return []
    return sorted(str(p.parent) for p in root.glob("*/cfg.json"))


def short_name(path: str) -> str:
    """The folder's name, for titles: `/a/b/mlp_out-topk` -> `mlp_out-topk`."""
    return Path(path).name or path
