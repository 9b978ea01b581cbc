"""Handlers for the Inspector: open an SAE (and its index), feature pages, live text, search."""

from __future__ import annotations

from engine.errors import UserError
from engine.handlers.state import EngineState
from engine.jobs import Job


def _view(state: EngineState, path: str):
    view = state.views.get(path)
    if view is None:
        raise UserError(f"SAE {path} is not open: send sae.open first")
    return view


def sae_open(state: EngineState, params, ctx: Job) -> dict:
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


def feature_page(state: EngineState, params, ctx: Job) -> dict:
    return _view(state, params.path).feature_page(params.feature, top=params.top)


def feature_live(state: EngineState, params, ctx: Job) -> dict:
    return _view(state, params.path).live(params.text)


def feature_search(state: EngineState, params, ctx: Job) -> dict:
    return {"results": _view(state, params.path).search(params.kind, params.query, params.n)}
