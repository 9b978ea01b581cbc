"""The ablation tree: which features drive a prediction (up) or what a feature drives (down).

A node is a plain dict: `node` (what it is), `effect` (signed change of its
parent's quantity), `method` ("exact" or "attribution"), `description`, and
`children` (expanded lazily, so `children` is None until asked for).

- Up (root: the prediction at a position): children are the last site's features
  and error term with the largest effect on the metric; a feature's children are
  the previous site's features with the largest effect on *its* activation there.
- Down (root: ablating upstream features): children are the features of the next
  site whose activation changes most, and the logits that change most.

Notes
- Exact effects ablate each candidate alone, many per batched forward pass
  (`Splice.exact_effects`); the candidates are the features active anywhere up to
  the target position (an inactive feature's zero ablation changes nothing), plus the
  error term. The down tree's rows (one ablation each) are batched the same way.
- `agreement` compares the two methods on the same candidates (Pearson and
  Spearman correlation), the number the Ablation pane shows.
"""

from __future__ import annotations

from typing import Callable

import torch

from engine.ablate import ERROR, Intervention, Site, Splice, Target


def node_label(sites: list[Site], site: int | None, feature: int | None, kind: str, token: str = "") -> dict:
    if kind == "feature":
        return {"kind": "feature", "site": sites[site].name, "site_index": site, "feature": feature}
    if kind == "error":
        return {"kind": "error", "site": sites[site].name, "site_index": site}
    if kind == "logit":
        return {"kind": "logit", "token": token, "token_id": feature}
    return {"kind": "metric", "metric": token}


class TreeBuilder:
    def __init__(self, splice: Splice, tokens: torch.Tensor, position: int, metric: Target,
                 describe: Callable[[int, int], str] = lambda site, f: "", mode: str = "zero",
                 method: str = "attribution", top: int = 8, ig_steps: int = 1, clean=None):
        self.s, self.tokens, self.position, self.metric = splice, tokens, position, metric
        self.describe, self.mode, self.method, self.top, self.ig_steps = describe, mode, method, top, ig_steps
        self.clean = clean if clean is not None else splice.run(tokens, upto=position)

    # ---- up --------------------------------------------------------------------
    def candidates(self, site: int) -> list[int]:
        acts = self.clean.acts[site][1:self.position + 1]
        return (acts != 0).any(0).nonzero().flatten().tolist()

    def effects_on(self, target: Target, site: int, method: str | None = None, *, job=None) -> dict[int, float]:
        method = method or self.method
        if method == "exact":
            return self.s.exact_effects(self.tokens, target, site, self.candidates(site) + [ERROR], self.mode,
                                        job=job)
        eff, err = self.s.attribution_effects(self.tokens, target, site, self.mode, steps=self.ig_steps, job=job)
        out = {f: float(eff[f]) for f in eff.abs().topk(min(len(eff), max(self.top * 4, 32))).indices.tolist()}
        out[ERROR] = err
        return out

    def up_children(self, target: Target, site: int, method: str | None = None, *, job=None) -> list[dict]:
        method = method or self.method
        effects = self.effects_on(target, site, method, job=job)
        ranked = sorted(effects.items(), key=lambda kv: -abs(kv[1]))[: self.top]
        return [self._feature_node(site, f, e, method=method) for f, e in ranked]

    def _feature_node(self, site: int, f: int, effect: float, direction: str = "up",
                      method: str | None = None) -> dict:
        kind = "error" if f == ERROR else "feature"
        return {"node": {**node_label(self.s.sites, site, f, kind), "direction": direction},
                "effect": effect, "method": method or self.method,
                "description": "" if f == ERROR else self.describe(site, f), "children": None}

    def root_up(self, depth: int = 1, *, job=None) -> dict:
        """`job` (an `engine.jobs.Job`) can cancel it and gets progress (the first
        level, then an equal share for each node expanded below it)."""
        from engine.jobs import as_job

        job = as_job(job)
        last = len(self.s.sites) - 1
        first = 1.0 if depth <= 1 else 1.0 / (1 + self.top)
        root = {"node": node_label(self.s.sites, None, None, "metric", self._metric_name()),
                "effect": float(self.s.value(self.metric, self.clean)), "method": "value",
                "description": "", "children": self.up_children(self.metric, last, job=job.span(0.0, first))}
        self._expand_up(root["children"], depth - 1, job.span(first, 1.0))
        return root

    def expand_up(self, node: dict, method: str | None = None, *, job=None) -> list[dict]:
        """Children of a feature node: the previous site's features that drive it."""
        n = node["node"]
        if n["kind"] == "metric":
            node["children"] = self.up_children(self.metric, len(self.s.sites) - 1, method, job=job)
            return node["children"]
        if n["kind"] != "feature" or n["site_index"] == 0:
            node["children"] = []
            return []
        target = Target("feature", self.position, site=n["site_index"], feature=n["feature"])
        node["children"] = self.up_children(target, n["site_index"] - 1, method, job=job)
        return node["children"]

    def _expand_up(self, nodes: list[dict], depth: int, job) -> None:
        if depth <= 0 or not nodes:
            return
        share = 1.0 / len(nodes)
        for i, node in enumerate(nodes):
            part = job.span(i * share, (i + 1) * share)
            if depth <= 1:
                self.expand_up(node, job=part)
                continue
            first = 1.0 / (1 + self.top)
            self._expand_up(self.expand_up(node, job=part.span(0.0, first)), depth - 1, part.span(first, 1.0))

    # ---- down ------------------------------------------------------------------
    def down_children(self, site: int, features: list[int], mode: str | None = None, *, job=None) -> list[dict]:
        """What ablating `features` of `site` (together) changes: next-site features and logits."""
        return self._down(site, [features], mode, job)[0]

    def _down(self, site: int, groups: list[list[int]], mode: str | None, job) -> list[list[dict]]:
        """`down_children` of each group of `site`'s features, from batched passes (a row
        per group, measured against the pass's clean row)."""
        mode = mode or self.mode
        rows = [[Intervention(site, f, mode) for f in group] for group in groups]
        after = (site + 1,) if site + 1 < len(self.s.sites) else ()
        out = []
        for _, r in self.s.passes(self.tokens, site, rows, self.position, after, job=job):
            out += [self._down_nodes(site, r, i) for i in range(1, len(r.logits))]
        return out

    def _down_nodes(self, site: int, r, i: int) -> list[dict]:
        """The children for row `i` of a batched pass `r`: the next site's features and the
        logits that change most against the clean row 0."""
        out = []
        if r.acts:
            d = r.acts[site + 1][i] - r.acts[site + 1][0]
            for f in d.abs().topk(min(self.top, d.numel())).indices.tolist():
                if d[f] != 0:
                    out.append({**self._feature_node(site + 1, f, float(d[f]), "down"), "method": "exact"})
        dl = r.logits[i] - r.logits[0]
        vocab = self.s.lm.tokenizer
        for t in dl.abs().topk(min(self.top, dl.numel())).indices.tolist():
            if dl[t] == 0:
                continue
            out.append({"node": node_label(self.s.sites, None, t, "logit", vocab.decode([t])),
                        "effect": float(dl[t]), "method": "exact", "description": "", "children": []})
        return out

    def root_down(self, site: int, features: list[int], depth: int = 1, mode: str | None = None,
                  *, job=None) -> dict:
        """The down tree of ablating `features` of `site` together; with `depth` > 1 its
        feature children are expanded too, all in one batched pass."""
        from engine.jobs import as_job

        job = as_job(job)
        job.progress(0.0, "ablating downstream")
        root = {"node": {"kind": "ablation", "site": self.s.sites[site].name, "site_index": site,
                         "features": features, "mode": mode or self.mode, "direction": "down"},
                "effect": 0.0, "method": "exact", "description": "",
                "children": self.down_children(site, features, mode, job=job)}
        below = [c for c in root["children"] if c["node"]["kind"] == "feature"]
        if depth > 1 and below:
            groups = [[c["node"]["feature"]] for c in below]
            for child, children in zip(below, self._down(site + 1, groups, None, job)):
                child["children"] = children
        job.progress(1.0, "ablating downstream")
        return root

    def expand_down(self, node: dict, *, job=None) -> list[dict]:
        n = node["node"]
        node["children"] = (self.down_children(n["site_index"], [n["feature"]], job=job)
                            if n["kind"] == "feature" else [])
        return node["children"]

    def _metric_name(self) -> str:
        m, tok = self.metric, self.s.lm.tokenizer
        at = m.position - 1  # users count prompt tokens from 0, without the BOS
        if m.kind == "logit":
            return f"logit {tok.decode([m.token])!r} @ {at}"
        if m.kind == "logit_diff":
            return f"logit {tok.decode([m.token])!r} - {tok.decode([m.other])!r} @ {at}"
        return f"loss of {tok.decode([m.token])!r} @ {at}"

    # ---- checking attribution against exact ---------------------------------------
    def agreement(self, target: Target, site: int, *, job=None) -> dict:
        from engine.jobs import as_job

        job = as_job(job)
        exact = self.s.exact_effects(self.tokens, target, site, self.candidates(site), self.mode,
                                     job=job.span(0.0, 0.9))
        eff, _ = self.s.attribution_effects(self.tokens, target, site, self.mode, steps=self.ig_steps,
                                            job=job.span(0.9, 1.0))
        feats = sorted(exact)
        a = torch.tensor([exact[f] for f in feats], dtype=torch.float64)
        b = torch.tensor([float(eff[f]) for f in feats], dtype=torch.float64)
        return {"n": len(feats), "pearson": _pearson(a, b), "spearman": _pearson(_rank(a), _rank(b)),
                "pairs": [{"feature": f, "exact": x, "attribution": y} for f, x, y in zip(feats, a.tolist(), b.tolist())]}


def _rank(x: torch.Tensor) -> torch.Tensor:
    return x.argsort().argsort().double()


def _pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).sum() / (a.norm() * b.norm()))


def open_sites(lm, sae_dirs: list[str], index_tokens: int | None = None, corpus=None,
               context: int | None = None) -> tuple[list[Site], list]:
    """Sites for SAE folders (upstream first); their views give descriptions and means."""
    from engine.inspect import SaeView

    views = [SaeView(lm, d, corpus=corpus, index_tokens=index_tokens, context=context) for d in sae_dirs]
    return sites_for(lm, views), views


def sites_for(lm, views: list) -> list[Site]:
    """A splice site per SAE view (upstream first), with its mean activation where it has an index."""
    sites = []
    for view in views:
        mean = None
        if view.index is not None:
            mean = (view.index.act_sum / view.index.meta["tokens"]).float().to(lm.device)
        name = view.hook.split(".")[-1].removeprefix("hook_")
        sites.append(Site(name, view.hook, view.sae, mean))
    return sites


def open_tree(lm, views: list, prompt: str, position: int | None = None, mode: str = "zero",
              method: str = "attribution", top: int = 8, ig_steps: int = 1, describe: bool = True) -> TreeBuilder:
    """The one set-up of an ablation tree (CLI, engine, scans): the prompt's tokens, the
    checked position, the splice over the views' SAEs, and the root metric, the logit of the
    clean prediction at that position. `views`: `engine.inspect.SaeView`s, upstream first."""
    from engine.errors import UserError
    from engine.predict import prompt_tokens

    if mode not in ("zero", "mean"):
        raise UserError(f"unknown mode {mode!r}: use zero or mean")
    if method not in ("exact", "attribution"):
        raise UserError(f"unknown method {method!r}: use exact or attribution")
    if not 1 <= top <= 100:
        raise UserError("--top must be 1..100")
    tokens = prompt_tokens(lm, prompt)
    at = token_position(tokens, position)
    splice = Splice(lm, sites_for(lm, views))
    clean = splice.run(tokens, upto=at)
    metric = Target("logit", at, token=int(clean.logits[at].argmax()))
    return TreeBuilder(splice, tokens, at, metric, describer(views) if describe else (lambda site, f: ""),
                       mode, method, top, ig_steps, clean=clean)


def describer(views: list) -> Callable[[int, int], str]:
    """Short descriptions from each SAE's index, or '' where there is none: the view's own
    where it has them (`SaeView.description`), else `describe` of the tokens at the maxima
    of the top examples, read from the index's windows without a model pass (cached)."""
    from collections import Counter

    top = 10  # examples a description is drawn from, a page's default
    cache: dict = {}

    def fn(site: int, f: int) -> str:
        v = views[site]
        if v.index is None:
            return ""
        if hasattr(v, "description"):
            return v.description(f)
        if (site, f) not in cache:
            windows, positions = v.index.top_windows[f], v.index.top_positions[f]
            keep = windows >= 0
            peaks = v.windows[windows[keep][:top], positions[keep][:top]].tolist()
            counts = Counter(v.lm.tokenizer.decode([t]) for t in peaks)  # as `engine.inspect.describe`
            cache[site, f] = " ".join(repr(t) for t, _ in counts.most_common(3))
        return cache[site, f]
    return fn


def token_position(tokens: torch.Tensor, position: int | None) -> int:
    """The index into `tokens` (BOS first) of prompt token `position`, which users count
    from 0 without the BOS (None: the last token); out of range is a `UserError`."""
    from engine.errors import UserError

    T = tokens.shape[1]
    if position is None:
        return T - 1
    if not 0 <= position <= T - 2:
        raise UserError(f"position {position} is beyond the prompt (0..{T - 2})")
    return position + 1


def ablation_tree(lm, upstream: str, downstream: str, prompt: str, position: int | None = None,
                  features: list[int] | None = None, mode: str = "zero", method: str = "attribution",
                  top: int = 8, depth: int = 1, ig_steps: int = 1, corpus=None, context: int | None = None,
                  job=None) -> dict:
    """The headless `saescope ablate`: a tree rooted at the prediction, or at ablated upstream features.
    `corpus`/`context`: the SAEs' index corpus (a `TokenCorpus`) and window length;
    `job` (an `engine.jobs.Job`): cancel and progress."""
    from engine.errors import UserError
    from engine.saes import check_features

    if not 1 <= depth <= 4:
        raise UserError("--depth must be 1..4")
    _, views = open_sites(lm, [upstream, downstream], corpus=corpus, context=context)
    tb = open_tree(lm, views, prompt, position, mode, method, top, ig_steps)
    if features:
        check_features(views[0].d_sae, features, upstream)
        tree = tb.root_down(0, features, depth, job=job)
    else:
        tree = tb.root_up(depth, job=job)
    return {"prompt": prompt, "tokens": lm.model.to_str_tokens(tb.tokens[0])[1:], "position": tb.position - 1,
            "predicted": lm.tokenizer.decode([tb.metric.token]), "mode": mode, "method": method, "tree": tree}


def important_uninterpretable(lm, sae_dirs: list[str], prompt: str, position: int | None = None,
                              method: str = "exact", n: int = 10, max_concentration: float = 0.3,
                              corpus=None, context: int | None = None, job=None) -> dict:
    """Features with the largest causal effect on the prediction whose top examples share
    no obvious token: at most `max_concentration` of them peak on the same token.
    `job` (an `engine.jobs.Job`): cancel and progress.

    Only the rows shown are read from the index (in order of effect, until `n`
    uninterpretable ones are found), so the scan's cost does not grow with the
    number of candidates beyond their ablations."""
    from engine.errors import UserError
    from engine.inspect import describe, top_token_concentration
    from engine.jobs import as_job

    job = as_job(job)

    sites, views = open_sites(lm, sae_dirs, corpus=corpus, context=context)
    if any(v.index is None for v in views):
        raise UserError("every SAE needs its feature index first: run `saescope index SAE_DIR`")
    tb = open_tree(lm, views, prompt, position, method=method, describe=False)
    metric = tb.metric
    scan = 0.8  # share of the progress for the ablations; the rest reads examples
    found = []
    for i, view in enumerate(views):
        part = job.span(scan * i / len(views), scan * (i + 1) / len(views))
        found += [(i, f, effect) for f, effect in tb.effects_on(metric, i, job=part).items() if f != ERROR]
    found.sort(key=lambda r: -abs(r[2]))
    rows, uninterpretable = [], []
    for i, f, effect in found:
        if len(rows) >= n and len(uninterpretable) >= n:
            break
        job.check()
        view, idx = views[i], views[i].index
        examples = view._examples(f, idx.top_windows[f], idx.top_positions[f], idx.top_values[f], 20)
        row = {"site": sites[i].name, "feature": f, "effect": effect,
               "top_token_concentration": top_token_concentration(examples),
               "description": describe(examples[:10])}  # what `describer` shows: the top 10
        rows.append(row)
        if row["top_token_concentration"] <= max_concentration:
            uninterpretable.append(row)
        job.progress(scan + (1 - scan) * min(1.0, len(uninterpretable) / max(1, n)), "reading top examples")
    job.progress(1.0, "reading top examples")
    return {"prompt": prompt, "predicted": lm.tokenizer.decode([metric.token]), "method": method,
            "most_important": rows[:n],
            "max_concentration": max_concentration,
            "uninterpretable": uninterpretable[:n]}
