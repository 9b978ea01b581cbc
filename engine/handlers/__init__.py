"""What each request method does: thin wrappers over the engine's plain functions.

A handler takes the shared `Workspace`, its typed parameters and the request's
`Job` (to stream events and notice cancellation) and returns its reply's result.
Handlers in `INLINE` are answered on the reading thread at once; the rest run as
jobs on their own threads, so `ping` and `cancel` answer while they work.
"""

from __future__ import annotations

from typing import Callable

from engine.handlers.circuits import circuit_find, circuit_threshold, circuit_verify
from engine.handlers.basic import model_info, model_load, ping, predict, sleep, workspace
from engine.handlers.features import feature_live, feature_page, feature_search, sae_open
from engine.handlers.geometry import sae_map
from engine.handlers.graphs import graph_compare, graph_node, graph_stats
from engine.handlers.training import (train_emergence, train_follow, train_list, train_read, train_scan, train_start,
                                      train_stop)
from engine.handlers.trees import tree_ablate, tree_check, tree_expand, tree_open
from engine.jobs import Cancelled, Job

HANDLERS: dict[str, Callable] = {
    "ping": ping,
    "model.info": model_info,
    "model.load": model_load,
    "predict": predict,
    "sleep": sleep,
    "workspace": workspace,
    "train.start": train_start,
    "train.read": train_read,
    "train.scan": train_scan,
    "train.list": train_list,
    "train.follow": train_follow,
    "train.stop": train_stop,
    "train.emergence": train_emergence,
    "sae.open": sae_open,
    "feature.page": feature_page,
    "feature.live": feature_live,
    "feature.search": feature_search,
    "sae.map": sae_map,
    "tree.open": tree_open,
    "tree.expand": tree_expand,
    "tree.check": tree_check,
    "tree.ablate": tree_ablate,
    "circuit.find": circuit_find,
    "circuit.threshold": circuit_threshold,
    "circuit.verify": circuit_verify,
    "graph.stats": graph_stats,
    "graph.node": graph_node,
    "graph.compare": graph_compare,
}
INLINE = {"ping", "model.info", "cancel", "jobs", "workspace"}
CAPABILITIES = sorted(set(HANDLERS) | {"cancel", "jobs"})

__all__ = ["CAPABILITIES", "HANDLERS", "INLINE", "Cancelled", "Job"]
