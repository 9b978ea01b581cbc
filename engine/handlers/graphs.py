"""Handlers for co-activation graphs (`graph.stats`, `graph.node`, `graph.compare`):
engine/graph_report.py over the workspace's SAE views.

Views are the Inspector's (engine/handlers/features.py `open_view`): an SAE already
open is used as it is; otherwise it is opened, with its index built (or rebuilt
for co-occurrence) as part of the job, with progress.
"""

from __future__ import annotations

from engine.handlers.features import open_view
from engine.jobs import Job
from engine.protocol import GraphComparison, GraphNode, GraphStats
from engine.workspace import Workspace


def _view(state: Workspace, path: str, job: Job):
    """The view of `path` (a folder, a release, or a shipped SAE's name such as `mlp_out-topk`)."""
    from engine.geometry import resolve_sae

    return open_view(state, resolve_sae(path), job=job, build_index=True)


def graph_stats(state: Workspace, params, ctx: Job) -> GraphStats:
    from engine.graph_report import graph_stats as stats

    return stats(_view(state, params.path, ctx), params, ctx)


def graph_node(state: Workspace, params, ctx: Job) -> GraphNode:
    from engine.graph_report import graph_node as node

    return node(_view(state, params.path, ctx), params, ctx)


def graph_compare(state: Workspace, params, ctx: Job) -> GraphComparison:
    from engine.graph_report import graph_compare as compare

    view_a = _view(state, params.path, ctx)
    view_b = _view(state, params.other, ctx)
    return compare(view_a, view_b, params, ctx)
