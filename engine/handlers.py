"""What each request method does: thin wrappers over the engine's plain functions.

A handler takes the shared `EngineState`, its typed parameters and a `JobContext`
(to stream events and notice cancellation) and returns the result dict of its
reply. Handlers in `INLINE` are answered on the reading thread at once; the rest
run as jobs on their own threads, so `ping` and `cancel` answer while they work.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from engine import __version__
from engine.errors import UserError
from engine.protocol import PROTOCOL_VERSION


class Cancelled(Exception):
    """Raised inside a job when its cancel flag is seen."""


@dataclass
class JobContext:
    request_id: str
    method: str
    emit: Callable[[str, dict], None]
    cancel_flag: threading.Event = field(default_factory=threading.Event)
    started: float = field(default_factory=time.time)

    def check(self) -> None:
        if self.cancel_flag.is_set():
            raise Cancelled()


@dataclass
class EngineState:
    """What outlives a request: the loaded model (shared by all connections)."""

    model: Any = None  # engine.models.LoadedModel
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    views: dict = field(default_factory=dict)  # SAE folder -> engine.inspect.SaeView
    trees: dict = field(default_factory=dict)  # tree name -> (TreeBuilder, root node)

    def require_model(self):
        with self.model_lock:  # a load in progress finishes first
            pass
        if self.model is None:
            raise UserError("no model is loaded: send model.load first")
        return self.model


def ping(state: EngineState, params, ctx: JobContext) -> dict:
    return {"pong": True, "time": time.time(), "protocol": PROTOCOL_VERSION, "version": __version__}


def model_info(state: EngineState, params, ctx: JobContext) -> dict:
    if state.model is None:
        return {"loaded": False}
    info = state.model.info()
    info.pop("hooks")
    return {"loaded": True, **info, "hooks": sorted(state.model.model.hook_dict)}


def model_load(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.models import load_model

    ctx.emit("progress", {"message": f"loading {params.spec}", "fraction": 0.0})
    with state.model_lock:
        lm = load_model(params.spec, params.device, params.dtype)
        state.model = lm
        state.views.clear()  # they were tied to the old model
        state.trees.clear()
    ctx.emit("progress", {"message": "loaded", "fraction": 1.0})
    return model_info(state, params, ctx)


def predict(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.predict import predict as run_predict

    return run_predict(state.require_model(), params.text, params.top)


def sleep(state: EngineState, params, ctx: JobContext) -> dict:
    if not (0 <= params.seconds <= 3600 and 1 <= params.steps <= 100_000):
        raise UserError("sleep takes 0 <= seconds <= 3600 and 1 <= steps <= 100000")
    for step in range(params.steps):
        time.sleep(params.seconds / params.steps)
        ctx.check()
        ctx.emit("progress", {"step": step + 1, "total": params.steps,
                              "fraction": (step + 1) / params.steps})
    return {"slept": params.seconds, "steps": params.steps}


class Throttle:
    """Forward at most `rate` metric events per second per run; always the last one."""

    def __init__(self, emit, rate: float = 10.0):
        self.emit, self.gap, self.last = emit, 1.0 / rate, {}

    def __call__(self, run: int, record: dict, final: bool = False) -> None:
        now = time.time()
        if final or record.get("kind") != "step" or now - self.last.get(run, 0) >= self.gap \
                or "density_histogram" in record:
            self.last[run] = now
            self.emit("metrics", {"run": run, "record": record})


def train_start(state: EngineState, params, ctx: JobContext) -> dict:
    from pathlib import Path

    from engine.train.config import TrainConfig
    from engine.train.loop import train

    if not params.runs:
        raise UserError("train.start needs at least one run")
    cfgs, dirs = [], []
    for run in params.runs:
        run = dict(run)
        out = run.pop("out", None)
        if not out:
            raise UserError("each run needs an `out` folder")
        if "model" not in run and state.model is not None:
            run["model"] = state.model.spec
        cfgs.append(TrainConfig.from_dict(run))
        dirs.append(Path(out).expanduser())
    lm = state.model if state.model is not None and state.model.spec == cfgs[0].model else None
    throttle = Throttle(ctx.emit)
    results = train(cfgs, dirs, lm=lm, on_record=throttle, check=ctx.check, resume=params.resume,
                    log=lambda m: ctx.emit("log", {"message": m}))
    return {"runs": results}


def train_read(state: EngineState, params, ctx: JobContext) -> dict:
    from pathlib import Path

    from engine.train.checkpoint import read_metrics
    from engine.train.config import TrainConfig

    path = Path(params.path).expanduser()
    cfg = TrainConfig.load(path)
    final = path / "eval.json"
    return {"config": json.loads(cfg.to_json()), "records": read_metrics(path),
            "eval": json.loads(final.read_text()) if final.exists() else None}


def _view(state: EngineState, path: str):
    view = state.views.get(path)
    if view is None:
        raise UserError(f"SAE {path} is not open: send sae.open first")
    return view


def sae_open(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.corpus import corpus_for
    from engine.inspect import SaeView

    lm = state.require_model()
    view = SaeView(lm, params.path, corpus=corpus_for(params.corpus, lm), index_tokens=params.tokens,
                   context=params.context)
    if params.build_index:
        view.ensure_index(progress=lambda f: ctx.emit("progress", {"message": "indexing", "fraction": f}),
                          check=ctx.check)
    state.views[params.path] = view
    idx = view.index
    return {"path": params.path, "hook": view.hook, "d_sae": view.d_sae, "architecture": view.sae.cfg.architecture(),
            "indexed": idx is not None, "index_tokens": idx.meta["tokens"] if idx else 0,
            "alive": int((idx.fire_count > 0).sum()) if idx else None}


def feature_page(state: EngineState, params, ctx: JobContext) -> dict:
    return _view(state, params.path).feature_page(params.feature, top=params.top)


def feature_live(state: EngineState, params, ctx: JobContext) -> dict:
    return _view(state, params.path).live(params.text)


def feature_search(state: EngineState, params, ctx: JobContext) -> dict:
    return {"results": _view(state, params.path).search(params.kind, params.query, params.n)}


def tree_open(state: EngineState, params, ctx: JobContext) -> dict:
    from engine.ablate import Splice, Target
    from engine.predict import prompt_tokens
    from engine.tree import TreeBuilder, describer, open_sites, token_position

    lm = state.require_model()
    tokens = prompt_tokens(lm, params.prompt)
    position = token_position(tokens, params.position)
    sites, views = open_sites(lm, [params.upstream, params.downstream], context=params.context)
    splice = Splice(lm, sites)
    clean = splice.run(tokens, upto=position)
    metric = Target("logit", position, token=int(clean.logits[position].argmax()))
    tb = TreeBuilder(splice, tokens, position, metric, describer(views), params.mode, params.method, params.top)
    root = tb.root_up(depth=1)
    state.trees[params.tree] = (tb, root)
    return {"tree": params.tree, "tokens": lm.model.to_str_tokens(tokens[0])[1:], "position": position - 1,
            "predicted": lm.tokenizer.decode([metric.token]),
            "sites": [{"name": s.name, "hook": s.hook, "path": str(v.dir)} for s, v in zip(sites, views)],
            "root": root}


def _tree_node(state: EngineState, name: str, path: list[int]):
    if name not in state.trees:
        raise UserError(f"no open tree named {name!r}: send tree.open first")
    tb, node = state.trees[name]
    for i in path:
        children = node.get("children") or []
        if not 0 <= i < len(children):
            raise UserError(f"no node at path {path}")
        node = children[i]
    return tb, node


def tree_expand(state: EngineState, params, ctx: JobContext) -> dict:
    tb, node = _tree_node(state, params.tree, params.path)
    if node["node"].get("direction") == "down":
        children = tb.expand_down(node)
    else:
        children = tb.expand_up(node, params.method)
    return {"path": params.path, "children": children}


def tree_check(state: EngineState, params, ctx: JobContext) -> dict:
    """Exact against attribution for the children of a node (the metric or a feature)."""
    from engine.ablate import Target

    tb, node = _tree_node(state, params.tree, params.path)
    n = node["node"]
    if n["kind"] == "metric":
        target, site = tb.metric, len(tb.s.sites) - 1
    elif n["kind"] == "feature" and n["site_index"] > 0:
        target = Target("feature", tb.position, site=n["site_index"], feature=n["feature"])
        site = n["site_index"] - 1
    else:
        raise UserError("only the root and downstream features have upstream children to check")
    return {"path": params.path, **tb.agreement(target, site)}


def tree_ablate(state: EngineState, params, ctx: JobContext) -> dict:
    if params.tree not in state.trees:
        raise UserError(f"no open tree named {params.tree!r}: send tree.open first")
    tb, _ = state.trees[params.tree]
    if not 0 <= params.site < len(tb.s.sites):
        raise UserError(f"site {params.site} does not exist")
    d_sae = tb.s.sites[params.site].sae.cfg.d_sae
    for f in params.features:
        if not 0 <= f < d_sae:
            raise UserError(f"feature {f} is out of range (0..{d_sae - 1})")
    return {"root": tb.root_down(params.site, params.features, mode=params.mode)}


HANDLERS: dict[str, Callable] = {
    "ping": ping,
    "model.info": model_info,
    "model.load": model_load,
    "predict": predict,
    "sleep": sleep,
    "train.start": train_start,
    "train.read": train_read,
    "sae.open": sae_open,
    "feature.page": feature_page,
    "feature.live": feature_live,
    "feature.search": feature_search,
    "tree.open": tree_open,
    "tree.expand": tree_expand,
    "tree.check": tree_check,
    "tree.ablate": tree_ablate,
}
INLINE = {"ping", "model.info", "cancel", "jobs"}
CAPABILITIES = sorted(set(HANDLERS) | {"cancel", "jobs"})
