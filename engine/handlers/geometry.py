"""Handler for the feature map (`sae.map`): `engine.geometry.feature_map` over the workspace.

Notes
- Descriptions come from a workspace view of the SAE (engine/handlers/features.py),
  which needs the loaded model to be the SAE's: an SAE already open is used as it
  is; otherwise one is opened only when an index lies beside it (never built here:
  that is `sae.open`'s work). When no view can be had the map still comes back,
  and `description_note` says why its clusters are not described.
"""

from __future__ import annotations

from engine.errors import UserError
from engine.jobs import Job
from engine.protocol import FeatureMap
from engine.workspace import Workspace


def sae_map(state: Workspace, params, ctx: Job) -> FeatureMap:
    from engine.geometry import check_color, feature_map, pick_method, resolve_sae
    from engine.saes import sae_folder

    path = resolve_sae(params.path)
    pick_method(params.method)
    folder = sae_folder(path)
    check_color(folder, params.color)
    view, why = _view(state, path, folder)
    fmap = feature_map(path, params.method, params.clusters, params.color, params.seed, job=ctx, view=view)
    if why:
        fmap.description_note = why
    return fmap


def _view(state: Workspace, path: str, folder) -> tuple[object | None, str]:
    """(an open view of the SAE for its descriptions, or None with the reason)."""
    from engine.geometry import NO_INDEX, has_index
    from engine.handlers.features import open_view

    if state.known(("sae", path)):
        return state.get(("sae", path)), ""
    if not has_index(folder):
        return None, NO_INDEX.format(path=path)
    if state.model is None:
        return None, "no model is loaded, and the SAE's index is read through it: load its model to describe the clusters"
    try:
        return open_view(state, path), ""
    except UserError as e:  # most often: the SAE was made for another model than the one loaded
        return None, f"the clusters are not described: {e}"
