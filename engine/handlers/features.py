"""Handlers for the Inspector: open an SAE (and its index), feature pages, live text, search."""

from __future__ import annotations

import msgspec

from engine.errors import UserError
from engine.handlers.state import EngineState
from engine.jobs import Job
from engine.protocol import FeaturePage, LiveActs, SaeOpened, SearchResults


def _view(state: EngineState, path: str):
    view = state.views.get(path)
    if view is None:
        raise UserError(f"SAE {path} is not open: send sae.open first")
    return view


def sae_open(state: EngineState, params, ctx: Job) -> SaeOpened:
    from engine.corpus import corpus_for
    from engine.inspect import SaeView

    lm = state.require_model()
    view = SaeView(lm, params.path, corpus=corpus_for(params.corpus, lm), index_tokens=params.tokens,
                   context=params.context)
    if params.build_index:
        view.ensure_index(job=ctx)
    state.views[params.path] = view
    idx = view.index
    dead = view.dead_figure()  # the saved evaluation's; measuring it is `saescope eval`'s work
    return SaeOpened(path=params.path, hook=view.hook, d_sae=view.d_sae, architecture=view.sae.cfg.architecture(),
                     indexed=idx is not None, index_tokens=idx.meta["tokens"] if idx else 0,
                     alive=int((idx.fire_count > 0).sum()) if idx else None,
                     dead_fraction=(dead or {}).get("dead_fraction"), dead_tokens=(dead or {}).get("dead_tokens"))


def feature_page(state: EngineState, params, ctx: Job) -> FeaturePage:
    return msgspec.convert(_view(state, params.path).feature_page(params.feature, top=params.top), FeaturePage)


def feature_live(state: EngineState, params, ctx: Job) -> LiveActs:
    return msgspec.convert(_view(state, params.path).live(params.text), LiveActs)


def feature_search(state: EngineState, params, ctx: Job) -> SearchResults:
    return msgspec.convert({"results": _view(state, params.path).search(params.kind, params.query, params.n)},
                           SearchResults)
