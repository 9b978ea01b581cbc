"""What a feature means: its page (examples, histogram, logit effects, neighbours),
live activations on typed text, and searches over features.

`SaeView` ties an SAE folder to the loaded model and a corpus; the CLI, the
server and (through the server) the Inspector pane all read features through it.

Notes
- Example windows are re-run through model and SAE when a page is asked for
  (k windows, a few milliseconds), so the index stores no per-token activations.
- Logit effects use the direct path: the decoder direction times the unembedding
  (through the MLP's W_out first for `mlp.hook_post` SAEs), without the final
  LayerNorm's scale, which is the usual reading in SAE dashboards.
- `description` is the few tokens most often at the maximum of the top examples:
  the short label the ablation tree shows beside a feature.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Callable

import torch

from engine.errors import UserError
from engine.index import FeatureIndex, build_index, load_index, sae_identity, save_index

DEFAULT_INDEX_TOKENS = 1 << 20
CONTEXT_BEFORE, CONTEXT_AFTER = 20, 6


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
        self._logit_matrix: torch.Tensor | None = None
        self._dead: dict | None = None

    @property
    def d_sae(self) -> int:
        return self.sae.cfg.d_sae

    # ---- the index -------------------------------------------------------------
    def ensure_index(self, progress: Callable[[float], None] | None = None,
                     check: Callable[[], None] | None = None, rebuild: bool = False,
                     job=None) -> FeatureIndex:
        """The index, built (and saved, atomically and only when complete) if missing.
        `job` (an `engine.jobs.Job`) can cancel the build; nothing is written then."""
        if self.index is None or rebuild:
            index = build_index(self.lm, self.sae, self.hook, self.windows, self.identity,
                                job=job, progress=progress, check=check)
            save_index(index, self.dir, self.corpus.name)
            self.index = index
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

    def _examples(self, feature: int, windows: torch.Tensor, positions: torch.Tensor, values: torch.Tensor,
                  limit: int) -> list[dict]:
        keep = windows >= 0
        windows, positions, values = windows[keep][:limit], positions[keep][:limit], values[keep][:limit]
        if len(windows) == 0:
            return []
        rows = self.windows[windows]
        acts = self._acts(rows)[:, :, feature]
        vocab = self.vocab()
        out = []
        for row, act, pos, value, w in zip(rows, acts, positions.tolist(), values.tolist(), windows.tolist()):
            lo, hi = max(1, pos - CONTEXT_BEFORE), min(len(row), pos + CONTEXT_AFTER + 1)
            out.append({"window": w, "max": value, "position": pos - lo,
                        "tokens": [vocab[i] for i in row[lo:hi].tolist()],
                        "acts": [round(a, 4) for a in act[lo:hi].tolist()]})
        return out

    # ---- the page --------------------------------------------------------------
    def feature_page(self, feature: int, top: int = 10, n_logits: int = 10, n_neighbours: int = 8) -> dict:
        self.check_feature(feature)
        idx = self._require_index()
        examples = self._examples(feature, idx.top_windows[feature], idx.top_positions[feature],
                                  idx.top_values[feature], top)
        seen = {e["window"] for e in examples}
        sample_order = idx.sample_values[feature].argsort(descending=True)
        sw, sp, sv = (t[feature][sample_order] for t in (idx.sample_windows, idx.sample_positions, idx.sample_values))
        fresh = torch.tensor([w not in seen for w in sw.tolist()], dtype=torch.bool)
        samples = self._examples(feature, sw[fresh], sp[fresh], sv[fresh], max(3, top // 2))
        counts = idx.hist[feature].tolist()
        return {
            "sae": str(self.dir), "hook": self.hook, "feature": feature, "d_sae": self.d_sae,
            "density": float(idx.density[feature]), "fire_count": int(idx.fire_count[feature]),
            "max_activation": float(idx.max_act[feature]), "mean_activation": float(idx.mean_act[feature]),
            "index_tokens": idx.meta["tokens"],
            "description": describe(examples),
            "examples": examples, "samples": samples,
            "histogram": {"edges": idx.meta["hist_edges"], "counts": counts},
            "logits": self.logit_effects(feature, n_logits),
            "neighbours": self.neighbours(feature, n_neighbours),
        }

    def _logits(self) -> torch.Tensor | None:
        """[S, d_vocab] direct-path logit effect of each feature's decoder direction."""
        if self._logit_matrix is None:
            m = self.lm.model
            W_dec = self.sae.W_dec.detach().float()
            if W_dec.shape[1] == m.cfg.d_model and re.search(r"hook_(resid_\w+|mlp_out|attn_out)$", self.hook):
                self._logit_matrix = W_dec @ m.W_U.float()
            elif (mm := re.match(r"blocks\.(\d+)\.mlp\.hook_post$", self.hook)):
                self._logit_matrix = W_dec @ m.blocks[int(mm.group(1))].mlp.W_out.float() @ m.W_U.float()
        return self._logit_matrix

    @torch.no_grad()
    def logit_effects(self, feature: int, n: int = 10) -> dict:
        L = self._logits()
        if L is None:
            return {"top": [], "bottom": [], "note": f"no direct path to the logits from {self.hook}"}
        row, vocab = L[feature], self.vocab()
        top, bottom = row.topk(n), row.topk(n, largest=False)
        return {"top": [{"token": vocab[i], "id": i, "value": v} for v, i in zip(top.values.tolist(), top.indices.tolist())],
                "bottom": [{"token": vocab[i], "id": i, "value": v} for v, i in zip(bottom.values.tolist(), bottom.indices.tolist())]}

    @torch.no_grad()
    def neighbours(self, feature: int, n: int = 8) -> list[dict]:
        W = torch.nn.functional.normalize(self.sae.W_dec.detach().float(), dim=-1)
        cos = W @ W[feature]
        cos[feature] = -2
        v = cos.topk(min(n, self.d_sae - 1))
        return [{"feature": i, "cosine": c} for c, i in zip(v.values.tolist(), v.indices.tolist())]

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
        if kind == "text":
            return self.live(query)["strongest"][:n]
        if kind == "token":
            L = self._logits()
            if L is None:
                raise UserError(f"features of {self.hook} have no direct path to the logits")
            ids = self.lm.tokenizer(query, add_special_tokens=False)["input_ids"]
            if len(ids) != 1:
                raise UserError(f"{query!r} is {len(ids)} tokens; give exactly one token")
            v = L[:, ids[0]].topk(n)
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


def describe(examples: list[dict], n: int = 3) -> str:
    """The tokens most often at the maximum of the top examples, e.g. `' self' '(' ':'`."""
    counts = Counter(e["tokens"][e["position"]] for e in examples)
    return " ".join(repr(t) for t, _ in counts.most_common(n))


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
