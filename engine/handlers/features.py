"""Handlers for the Inspector: open an SAE (and its index), feature pages, live text, search."""

from __future__ import annotations

import msgspec

from engine.errors import UserError
from engine.jobs import Job
from engine.protocol import FeaturePage, LiveActs, SaeOpened, SearchResults
from engine.workspace import Workspace, view_bytes


def _view(state: Workspace, path: str):
    if not state.known(("sae", path)):
        raise UserError(f"SAE {path} is not open: send sae.open first")
    return state.get(("sae", path))


def open_view(state: Workspace, path: str, corpus: str | None = None, tokens: int | None = None,
              context: int | None = None, job: Job | None = None, build_index: bool = False):
    """The workspace's view of an SAE folder, opened (and indexed) if it is not open with
    this context yet. `sae.open` and trees share views through here."""
    from engine.corpus import corpus_for
    from engine.inspect import SaeView

    lm = state.require_model()
    key = ("sae", path)
    if state.known(key) and corpus is None and tokens is None:
        view = state.get(key)
        if context is None or view.windows.shape[1] == context:
            if build_index and view.index is None:
                view.ensure_index(job=job)
            return view
        key = ("sae", path, context)  # another window length: its own view
        if state.known(key):
            return state.get(key)

    def build():
        return SaeView(lm, path, corpus=corpus_for(corpus, lm), index_tokens=tokens, context=context)

    view = build()
    if build_index:
        view.ensure_index(job=job)
    return state.open(key, build, view_bytes, what=f"the SAE {path}", value=view)


def sae_open(state: Workspace, params, ctx: Job) -> SaeOpened:
    view = _open_anew(state, params, ctx)
    idx = view.index
    dead = view.dead_figure()  # the saved evaluation's; measuring it is `saescope eval`'s work
    return SaeOpened(path=params.path, hook=view.hook, d_sae=view.d_sae, architecture=view.sae.cfg.architecture(),
                     indexed=idx is not None, index_tokens=idx.meta["tokens"] if idx else 0,
                     alive=int((idx.fire_count > 0).sum()) if idx else None,
                     dead_fraction=(dead or {}).get("dead_fraction"), dead_tokens=(dead or {}).get("dead_tokens"))


def _open_anew(state: Workspace, params, job: Job):
    """`sae.open` always opens afresh (its corpus, tokens or context may differ from before)."""
    from engine.corpus import corpus_for
    from engine.inspect import SaeView

    lm = state.require_model()

    def build():
        return SaeView(lm, params.path, corpus=corpus_for(params.corpus, lm), index_tokens=params.tokens,
                       context=params.context)

    view = build()
    if params.build_index:
        view.ensure_index(job=job)
    return state.open(("sae", params.path), build, view_bytes, what=f"the SAE {params.path}", value=view)


def feature_page(state: Workspace, params, ctx: Job) -> FeaturePage:
    return msgspec.convert(_view(state, params.path).feature_page(params.feature, top=params.top), FeaturePage)


def feature_live(state: Workspace, params, ctx: Job) -> LiveActs:
    return msgspec.convert(_view(state, params.path).live(params.text), LiveActs)


def feature_search(state: Workspace, params, ctx: Job) -> SearchResults:
    return msgspec.convert({"results": _view(state, params.path).search(params.kind, params.query, params.n)},
                           SearchResults)
