"""What a feature means: its page (examples, histogram, logit effects, neighbours),
live activations on typed text, and searches over features.

`SaeView` ties an SAE folder to the loaded model and a corpus; the CLI, the
server and (through the server) the Inspector pane all read features through it.

Notes
- A page is read from the index alone: it stores each example's activations around
  its maximum, logit effects and neighbours (`engine.index`), so no window goes
  through the model again (that re-run was nearly all of a page's time) and no
  product over the weights runs per page.
- Logit effects use the direct path: the decoder direction times the unembedding
  (through the MLP's W_out first for `mlp.hook_post` SAEs), without the final
  LayerNorm's scale, which is the usual reading in SAE dashboards. The index keeps
  each feature's strongest ones and its nearest neighbours; a token search computes
  one token's column (never the [d_sae, d_vocab] matrix, hundreds of MB for a
  large vocabulary).
- `description` is the few tokens most often at the maximum of the top examples:
  the short label the ablation tree and search results show beside a feature.
  `SaeView.description` reads those tokens from the index's top windows and
  positions (no activations needed), once per feature.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UserError
from engine.index import (CONTEXT_AFTER, CONTEXT_BEFORE, LOGITS_KEPT, NEIGHBOURS_KEPT, FeatureIndex, build_index,
                          load_index, logit_path, sae_identity, save_index)

DEFAULT_INDEX_TOKENS = 1 << 20
DESCRIBE_TOP = 10  # top examples a description is drawn from (a page's default)


class SaeView:
    def __init__(self, lm, sae_dir: str | Path, corpus=None, index_tokens: int | None = None,
                 context: int | None = None):
        """`corpus`: a `TokenCorpus` in the model's tokens (None: the shipped corpus);
        `index_tokens`: the corpus tokens to index (None: the size of an existing index,
        else `DEFAULT_INDEX_TOKENS`); `context`: window length (None: an existing index's,
        else the model's default)."""
        from engine.corpus import check_tokenizer, corpus_for, default_context
        from engine.saes import check_fits, load_sae, sae_folder

        self.lm, self.dir = lm, sae_folder(sae_dir)
        self.sae = load_sae(self.dir, device=lm.device)
        self.hook = check_fits(self.sae, lm)
        self.corpus = check_tokenizer(corpus, lm) if corpus is not None else corpus_for(None, lm)
        self.identity = {"sae": sae_identity(self.dir), "corpus": self.corpus.identity}
        self.index: FeatureIndex | None = load_index(self.dir, self.corpus.name, self.identity)
        if context is None and self.index is not None:
            context = self.index.meta["n_ctx"]
        n_ctx = default_context(lm.model.cfg.n_ctx, context)
        if index_tokens is None:
            index_tokens = self.index.meta["windows"] * n_ctx if self.index else DEFAULT_INDEX_TOKENS
        self.windows = self.corpus.windows(n_ctx, split=None, max_tokens=index_tokens)
        if self.index is not None and (self.index.meta["windows"], self.index.meta["n_ctx"]) != tuple(self.windows.shape):
            self.index = None  # built over other windows: rebuilt on demand
        self._vocab: list[str] | None = None
        self._descriptions: dict[int, str] = {}
        self._dead: dict | None = None
        self.graphs: dict = {}  # co-activation graphs and their communities, by edge rule (engine/graph_report.py)

    @property
    def d_sae(self) -> int:
        return self.sae.cfg.d_sae

    # ---- the index -------------------------------------------------------------
    def ensure_index(self, progress: Callable[[float], None] | None = None,
                     check: Callable[[], None] | None = None, rebuild: bool = False,
                     job=None, ranks=None) -> FeatureIndex | None:
        """The index, built (and saved, atomically and only when complete) if missing.
        `job` (an `engine.jobs.Job`) can cancel the build; nothing is written then.
        `ranks` (engine.distributed's `Ranks`, every rank calling this): each rank
        indexes a share, rank 0 merges, saves and returns the index; the others, when
        they built, return None (engine/index_distributed.py)."""
        if self.index is None or rebuild:
            if ranks is not None and ranks.distributed:
                from engine.index_distributed import build_index_distributed
                from engine.jobs import as_job

                index = build_index_distributed(self.lm, self.sae, self.hook, self.windows, self.identity, ranks,
                                                job=as_job(job, check=check, progress=progress))
                if index is None:
                    return None
            else:
                index = build_index(self.lm, self.sae, self.hook, self.windows, self.identity,
                                    job=job, progress=progress, check=check)
            save_index(index, self.dir, self.corpus.name)
            self.index, self._descriptions = index, {}
        return self.index

    # ---- the dead fraction ------------------------------------------------------------
    def dead_figure(self, compute: bool = False, job=None) -> dict | None:
        """The SAE's dead fraction by its one rule (`engine.figures`: never fired on the
        first `DEAD_TOKENS` held-out tokens): the figure of its saved evaluation
        (`eval.json`, the final evaluation of its training run) when that followed
        the rule, else, with `compute`, measured here on the view's corpus the same
        way (an encode-only pass, kept for the view's life); else None. Not the count
        of features firing in the index, which covers other tokens."""
        from engine.corpus import default_context

        n_ctx = default_context(self.lm.model.cfg.n_ctx, None)
        if self._dead is None:
            self._dead = saved_dead(self.dir, n_ctx)
        if self._dead is None and compute:
            from engine.train.evaluate import measure_dead

            self._dead = {**measure_dead(self.lm, self.sae, self.hook, self.corpus, n_ctx, job=job),
                          "source": "measured"}
        return self._dead

    def _require_index(self) -> FeatureIndex:
        if self.index is None:
            raise UserError(f"{self.dir} has no index for this corpus yet: run `saescope index {self.dir}`")
        return self.index

    def check_feature(self, feature: int) -> int:
        from engine.saes import check_features

        check_features(self.d_sae, [feature])
        return feature

    # ---- tokens ----------------------------------------------------------------
    def vocab(self) -> list[str]:
        if self._vocab is None:
            tok = self.lm.tokenizer
            self._vocab = [tok.decode([i]) for i in range(self.lm.model.cfg.d_vocab)]
        return self._vocab

    @torch.no_grad()
    def _acts(self, tokens: torch.Tensor) -> torch.Tensor:
        """SAE activations [n, t, S] for token rows (BOS position included, as zeros)."""
        from engine.index import _stop_layer
        from engine.saes import encoder_input

        _, cache = self.lm.run_with_cache(tokens.to(self.lm.device), names_filter=[self.hook],
                                          stop_at_layer=_stop_layer(self.hook))
        x = cache[self.hook].float()
        acts = self.sae.encode(encoder_input(self.sae, x.reshape(-1, *x.shape[2:]))).reshape(*x.shape[:2], -1)
        acts[:, 0] = 0  # BOS: not what the SAE was trained on
        return acts.cpu()

    def _example(self, window: int, pos: int, value: float, acts: list[float]) -> dict:
        """One example as a page shows it: the window's tokens around its maximum at
        `pos` (`_span`) and `acts`, the feature's activations on those tokens."""
        row = self.windows[window]
        lo, hi = _span(pos, len(row))
        vocab = self.vocab()
        return {"window": window, "max": value, "position": pos - lo,
                "tokens": [vocab[i] for i in row[lo:hi].tolist()],
                "acts": [round(a, 4) for a in acts]}

    def _examples(self, feature: int, windows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                  limit: int) -> list[dict]:
        """Examples for any windows, their activations computed by running them through
        model and SAE (pages and descriptions read the index instead: `top_examples`)."""
        keep = windows >= 0
        windows, positions, values = windows[keep][:limit], positions[keep][:limit], values[keep][:limit]
        if len(windows) == 0:
            return []
        acts = self._acts(self.windows[windows])[:, :, feature]
        out = []
        for act, pos, value, w in zip(acts, positions.tolist(), values.tolist(), windows.tolist()):
            lo, hi = _span(pos, len(act))
            out.append(self._example(w, pos, value, act[lo:hi].tolist()))
        return out

    def _stored_examples(self, windows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                         contexts: torch.Tensor, limit: int) -> list[dict]:
        """Examples from one of the index's lists, with the activations it stored around
        each maximum (`contexts`: [slots, CONTEXT], column j at position max-CONTEXT_BEFORE+j)."""
        keep = windows >= 0
        windows, positions, values, contexts = (t[keep][:limit] for t in (windows, positions, values, contexts))
        out = []
        for w, pos, value, context in zip(windows.tolist(), positions.tolist(), values.tolist(), contexts):
            lo, hi = _span(pos, self.windows.shape[1])
            start = pos - CONTEXT_BEFORE  # the position of the context's column 0
            out.append(self._example(w, pos, value, context[lo - start:hi - start].tolist()))
        return out

    def top_examples(self, feature: int, n: int = DESCRIBE_TOP) -> list[dict]:
        """The feature's `n` strongest examples, read from the index (no model pass)."""
        self.check_feature(feature)
        idx = self._require_index()
        return self._stored_examples(idx.top_windows[feature], idx.top_positions[feature],
                                     idx.top_values[feature], idx.contexts(feature)[0], n)

    def description(self, feature: int) -> str:
        """The feature's short description, `describe` of its top `DESCRIBE_TOP` examples
        ('' without an index). Only the tokens at their maxima count, so it is read
        from the index's windows and positions, and kept: O(1) after the first call."""
        if self.index is None:
            return ""
        if feature not in self._descriptions:
            idx = self.index
            windows, positions = idx.top_windows[feature], idx.top_positions[feature]
            keep = windows >= 0
            peaks = self.windows[windows[keep][:DESCRIBE_TOP], positions[keep][:DESCRIBE_TOP]].tolist()
            vocab = self.vocab()
            self._descriptions[feature] = describe_tokens([vocab[t] for t in peaks])
        return self._descriptions[feature]

    # ---- the page --------------------------------------------------------------
    def feature_page(self, feature: int, top: int = 10, n_logits: int = LOGITS_KEPT,
                     n_neighbours: int = NEIGHBOURS_KEPT) -> dict:
        """Everything the Inspector shows for a feature, from the index, the SAE's decoder
        and the unembedding: no model pass."""
        self.check_feature(feature)
        idx = self._require_index()
        top_contexts, sample_contexts = idx.contexts(feature)
        examples = self._stored_examples(idx.top_windows[feature], idx.top_positions[feature],
                                         idx.top_values[feature], top_contexts, top)
        seen = {e["window"] for e in examples}
        order = idx.sample_values[feature].argsort(descending=True)
        sw, sp, sv = (t[feature][order] for t in (idx.sample_windows, idx.sample_positions, idx.sample_values))
        fresh = torch.tensor([w not in seen for w in sw.tolist()], dtype=torch.bool)
        samples = self._stored_examples(sw[fresh], sp[fresh], sv[fresh], sample_contexts[order][fresh],
                                        max(3, top // 2))
        fire_count = int(idx.fire_count[feature])
        return {
            "sae": str(self.dir), "hook": self.hook, "feature": feature, "d_sae": self.d_sae,
            "density": fire_count / idx.meta["tokens"], "fire_count": fire_count,
            "max_activation": float(idx.max_act[feature]),
            "mean_activation": float(idx.act_sum[feature]) / max(1, fire_count),
            "index_tokens": idx.meta["tokens"],
            "description": describe(examples),
            "examples": examples, "samples": samples,
            "histogram": {"edges": idx.meta["hist_edges"], "counts": idx.hist[feature].tolist()},
            "logits": self.logit_effects(feature, n_logits),
            "neighbours": self.neighbours(feature, n_neighbours),
        }

    def logit_effects(self, feature: int, n: int = LOGITS_KEPT) -> dict:
        """The feature's `n` (at most `LOGITS_KEPT`) strongest direct-path logit effects
        each way, from the index."""
        idx = self._require_index()
        if idx.logit_top_ids.shape[1] == 0:
            return {"top": [], "bottom": [], "note": f"no direct path to the logits from {self.hook}"}
        vocab = self.vocab()

        def effects(ids: torch.Tensor, values: torch.Tensor) -> list[dict]:
            return [{"token": vocab[i], "id": i, "value": v} for i, v in zip(ids[:n].tolist(), values[:n].tolist())]

        return {"top": effects(idx.logit_top_ids[feature], idx.logit_top_values[feature]),
                "bottom": effects(idx.logit_bottom_ids[feature], idx.logit_bottom_values[feature])}

    @torch.no_grad()
    def _token_effects(self, token: int) -> torch.Tensor:
        """[S]: every feature's direct-path logit effect on one token."""
        path = logit_path(self.lm.model, self.sae, self.hook)
        if path is None:
            raise UserError(f"features of {self.hook} have no direct path to the logits")
        column = path[-1][:, token].float()
        for matrix in reversed(path[:-1]):
            column = matrix.float() @ column
        return self.sae.W_dec.detach().float() @ column

    def neighbours(self, feature: int, n: int = NEIGHBOURS_KEPT) -> list[dict]:
        """The `n` (at most `NEIGHBOURS_KEPT`) features whose decoder directions are
        nearest the feature's by cosine, from the index."""
        idx = self._require_index()
        return [{"feature": f, "cosine": c}
                for f, c in zip(idx.neighbour_ids[feature, :n].tolist(), idx.neighbour_cosines[feature, :n].tolist())]

    # ---- live activations and search -----------------------------------------------
    @torch.no_grad()
    def live(self, text: str, per_token: int = 5) -> dict:
        from engine.predict import prompt_tokens

        tokens = prompt_tokens(self.lm, text)
        acts = self._acts(tokens)[0]  # [t, S]
        vocab = self.vocab()
        rows = []
        for pos in range(1, acts.shape[0]):
            v = acts[pos].topk(per_token)
            rows.append({"position": pos - 1, "token": vocab[int(tokens[0, pos])],
                         "features": [{"feature": f, "act": a} for a, f in zip(v.values.tolist(), v.indices.tolist()) if a > 0]})
        strongest = acts.max(0)
        order = strongest.values.argsort(descending=True)[:20]
        return {"tokens": [r["token"] for r in rows], "per_token": rows,
                "strongest": [{"feature": int(f), "max": float(strongest.values[f]),
                               "position": int(strongest.indices[f]) - 1} for f in order if strongest.values[f] > 0]}

    def search(self, kind: str, query: str = "", n: int = 20) -> list[dict]:
        """Features found by `kind` (text, token, densest, dead), each with its description."""
        return [{**hit, "description": self.description(hit["feature"])} for hit in self._search(kind, query, n)]

    def _search(self, kind: str, query: str, n: int) -> list[dict]:
        if kind == "text":
            return self.live(query)["strongest"][:n]
        if kind == "token":
            ids = self.lm.tokenizer(query, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise UserError(f"{query!r} is {len(ids)} tokens; give exactly one token")
            v = self._token_effects(ids[0]).topk(min(n, self.d_sae))
            return [{"feature": int(f), "value": float(x)} for x, f in zip(v.values, v.indices)]
        idx = self._require_index()
        if kind == "densest":
            v = idx.density.topk(min(n, self.d_sae))
            return [{"feature": int(f), "density": float(d)} for d, f in zip(v.values, v.indices)]
        if kind == "dead":
            return [{"feature": int(f), "density": 0.0} for f in (idx.fire_count == 0).nonzero().flatten()[:n]]
        raise UserError(f"unknown search {kind!r}: use text, token, densest or dead")


def saved_dead(sae_dir: Path, default_ctx: int) -> dict | None:
    """The dead fraction of the SAE's saved evaluation (`eval.json`), when it was
    measured on the full `DEAD_TOKENS` window; files written before `dead_tokens` was
    recorded measured it on all their `tokens`, in windows of the default context."""
    import json

    from engine.figures import dead_tokens_of, full_dead_window

    try:
        result = json.loads((Path(sae_dir) / "eval.json").read_text())
    except (OSError, ValueError):
        return None
    n, frac = dead_tokens_of(result), result.get("dead_fraction")
    ctx = result.get("dead_context") or result.get("context") or default_ctx
    if not isinstance(frac, (int, float)) or n is None or not full_dead_window(n, ctx):
        return None
    return {"dead_fraction": float(frac), "dead_tokens": n, "dead_context": ctx, "source": "eval.json"}


def _span(pos: int, length: int) -> tuple[int, int]:
    """The window positions `[lo, hi)` an example shows around its maximum at `pos`
    (never the BOS at 0)."""
    return max(1, pos - CONTEXT_BEFORE), min(length, pos + CONTEXT_AFTER + 1)


def describe(examples: list[dict], n: int = 3) -> str:
    """The tokens most often at the maximum of the top examples, e.g. `' self' '(' ':'`."""
    return describe_tokens([e["tokens"][e["position"]] for e in examples], n)


def describe_tokens(peaks: list[str], n: int = 3) -> str:
    """`describe` from the tokens at the examples' maxima alone."""
    return " ".join(repr(t) for t, _ in Counter(peaks).most_common(n))


def top_token_concentration(examples: list[dict]) -> float:
    """Share of top examples whose maximum sits on the single most common token (0..1)."""
    if not examples:
        return 0.0
    counts = Counter(e["tokens"][e["position"]] for e in examples)
    return counts.most_common(1)[0][1] / len(examples)


def open_view(sae_dir, model: str | None = None, corpus: str | None = None,
              tokens: int | None = None, lm=None, context: int | None = None, device: str | None = None) -> SaeView:
    """Load the SAE's model (unless given) and corpus, and wrap them in a `SaeView`."""
    from engine.corpus import corpus_for
    from engine.models import load_model
    from engine.saes import load_sae, model_spec_for

    if tokens is not None and tokens < 1024:
        raise UserError("--tokens must be at least 1024")
    lm = lm or load_model(model or model_spec_for(load_sae(sae_dir)), device)
    return SaeView(lm, sae_dir, corpus=corpus_for(corpus, lm), index_tokens=tokens, context=context)
