"""Node and edge effects on a task's metric: attribution patching, integrated gradients, exact.

A node's indirect effect is what setting it from its clean value to its patch value
does to the metric, averaged over the task's examples (Marks et al. 2024):
- attribution patching: `(patch - clean) . dm/dnode` at the clean point, every node
  of every site from one forward and one backward pass;
- integrated gradients: the gradient averaged over `steps` points on the straight
  path from clean to patch (midpoints), one site at a time, the others untouched;
- exact: the node really patched (at every position, or at its own), a forward pass
  per node (`exact_node`).

An edge `u -> d` is the effect of upstream node `u` on the metric through downstream
node `d`: `dm/dd . dd/du . (patch_u - clean_u)`, with `dd/du` taken along direct paths
only (sites between them are held; see `SiteStack.edge_graph`). One backward pass per
downstream node gives its edges from every upstream node at once. Edges to the metric
are the direct effects (`SiteStack.gradients(direct=True)`). Error terms are leaves:
they have edges out, none in. `exact_edge` measures an edge by two patched passes:
`m(u patched) - m(u patched, d held at clean)`, sites between them held.

Effects have shape [T, S] (features) and [T] (error terms) per site; position 0 (the
BOS) is never a node and its effects are 0. `summed` adds the positions up.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from engine.circuits.stack import Metric, SiteStack, SiteState

ERROR = -1  # the feature id of a site's error node


@dataclass
class NodeEffects:
    features: list[torch.Tensor]  # per site [T, S]
    errors: list[torch.Tensor]  # per site [T]

    def summed(self) -> "NodeEffects":
        return NodeEffects([f.sum(0) for f in self.features], [e.sum(0, keepdim=True) for e in self.errors])

    @property
    def per_position(self) -> bool:
        return self.features[0].dim() == 2


@dataclass(frozen=True)
class Node:
    site: int
    feature: int  # or ERROR
    position: int | None  # None: every position (summed nodes)

    def positions(self, T: int):
        return slice(1, T) if self.position is None else slice(self.position, self.position + 1)


def _no_bos(t: torch.Tensor) -> torch.Tensor:
    t[0] = 0
    return t


def attribution(stack: SiteStack, tokens, metric: Metric, clean: list[SiteState], patch: list[SiteState],
                job=None) -> tuple[NodeEffects, list[torch.Tensor]]:
    """Attribution patching for every node; also the feature gradients [B, T, S] per
    site (the weights of the edges into each site's nodes)."""
    gf, ge, _ = stack.gradients(tokens, metric, job=job)
    feats = [_no_bos(((p.f - c.f) * g).mean(0)) for c, p, g in zip(clean, patch, gf)]
    errs = [_no_bos(((p.e - c.e) * g).sum(-1).mean(0)) for c, p, g in zip(clean, patch, ge)]
    return NodeEffects(feats, errs), gf


def integrated_gradients(stack: SiteStack, tokens, metric: Metric, clean: list[SiteState],
                         patch: list[SiteState], steps: int = 10, max_rows: int = 512, job=None) -> NodeEffects:
    """Integrated gradients with `steps` midpoints per site; the points of a site run
    in batches of at most `max_rows` rows."""
    from engine.jobs import as_job

    job = as_job(job)
    B = tokens.shape[0]
    alphas = [(k + 0.5) / steps for k in range(steps)]
    per_pass = max(1, max_rows // B)
    feats, errs = [], []
    total = len(stack.sites) * steps
    for i in range(len(stack.sites)):
        c, p = clean[i], patch[i].expand(B)
        gf, ge = 0, 0
        for lo in range(0, steps, per_pass):
            chunk = alphas[lo:lo + per_pass]
            job.check()
            g1, g2 = stack.interpolated_gradients(tokens, metric, i, c, p, chunk, job)
            gf, ge = gf + g1 * len(chunk) / steps, ge + g2 * len(chunk) / steps
            job.progress((i * steps + lo + len(chunk)) / total, "integrated gradients",
                         step=i * steps + lo + len(chunk), total=total)
        feats.append(_no_bos(((p.f - c.f) * gf).mean(0)))
        errs.append(_no_bos(((p.e - c.e) * ge).sum(-1).mean(0)))
    return NodeEffects(feats, errs)


def _change(node: Node, leaf_grads: tuple, clean: SiteState, patch: SiteState, T: int) -> torch.Tensor:
    """`grad . (patch - clean)` of an upstream node, summed over its positions and
    averaged over rows."""
    gf, ge = leaf_grads
    pos = node.positions(T)
    if node.feature == ERROR:
        return ((patch.e[:, pos] - clean.e[:, pos]) * ge[:, pos]).sum() / gf.shape[0]
    return ((patch.f[:, pos, node.feature] - clean.f[:, pos, node.feature]) * gf[:, pos, node.feature]).sum() / gf.shape[0]


def edges(stack: SiteStack, tokens, metric: Metric, clean: list[SiteState], patch: list[SiteState],
          nodes: list[Node], feature_grads: list[torch.Tensor], job=None
          ) -> list[tuple[Node, Node | None, float]]:
    """Edges among `nodes` (the kept ones): `(upstream, downstream, effect)`, with
    downstream None for the metric. `feature_grads` are the metric's gradients w.r.t.
    each site's features ([B, T, S], from `attribution`)."""
    from engine.jobs import as_job

    job = as_job(job)
    B, T = tokens.shape
    patch = [p.expand(B) for p in patch]
    out: list[tuple[Node, Node | None, float]] = []
    # to the metric: direct effects
    gf, ge, _ = stack.gradients(tokens, metric, direct=True, job=job)
    for n in nodes:
        out.append((n, None, float(_change(n, (gf[n.site], ge[n.site]), clean[n.site], patch[n.site], T))))
    downstream = [n for n in nodes if n.feature != ERROR and any(u.site < n.site for u in nodes)]
    done = 0
    for site in sorted({n.site for n in downstream}):
        upstream = [u for u in nodes if u.site < site]
        with torch.enable_grad():
            leaves, f_down = stack.edge_graph(tokens, site, job)
            flat = [t for i in sorted({u.site for u in upstream}) for t in leaves[i]]
            index = {i: k for k, i in enumerate(sorted({u.site for u in upstream}))}
            for d in (n for n in downstream if n.site == site):
                job.check()
                pos = d.positions(T)
                weight = feature_grads[site][:, pos, d.feature].detach()
                value = (weight * f_down[:, pos, d.feature]).sum()  # summed over rows, like the metric
                grads = torch.autograd.grad(value, flat, retain_graph=True, allow_unused=True)
                grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, flat)]
                for u in upstream:
                    k = index[u.site]
                    out.append((u, d, float(_change(u, (grads[2 * k], grads[2 * k + 1]), clean[u.site],
                                                    patch[u.site], T))))
                done += 1
                job.progress(done / len(downstream), "edges", step=done, total=len(downstream))
    return out


# ---- exact ------------------------------------------------------------------------
def _patch_delta(stack: SiteStack, node: Node, clean: SiteState, patch: SiteState, T: int):
    """`delta(x, f)`: the change of the site's activation that sets `node` to its patch value."""
    sae = stack.sites[node.site].sae
    pos = node.positions(T)

    def delta(x, f):
        d = torch.zeros_like(x)
        if node.feature == ERROR:
            d[:, pos] = (patch.e - clean.e)[:, pos]
            return d
        f2 = f.clone()
        f2[:, pos, node.feature] = patch.f.expand_as(f)[:, pos, node.feature]
        return sae.decode(f2) - sae.decode(f)
    return delta


def _hold(stack: SiteStack, node: Node, clean: SiteState, T: int):
    """A freeze function holding `node` (a feature) at its clean value while the rest
    of its site follows the pass."""
    sae = stack.sites[node.site].sae
    pos = node.positions(T)

    def hold(x):
        f = sae.encode(x)
        f2 = f.clone()
        f2[:, pos, node.feature] = clean.f[:, pos, node.feature]
        return x + sae.decode(f2) - sae.decode(f)
    return hold


def _clean_x(stack: SiteStack, i: int, clean: SiteState):
    x = stack.sites[i].sae.decode(clean.f) + clean.e
    return lambda act: torch.cat([act[:, :1], x[:, 1:]], 1)


def exact_node(stack: SiteStack, tokens, metric: Metric, clean: list[SiteState], patch: list[SiteState],
               node: Node, base: torch.Tensor | None = None, job=None) -> float:
    """The metric's change (mean over rows) when `node` alone is set to its patch value."""
    B, T = tokens.shape
    base = stack.metric(tokens, metric, job) if base is None else base
    delta = _patch_delta(stack, node, clean[node.site], patch[node.site].expand(B), T)
    return float((stack.patched(tokens, metric, node.site, delta, job=job) - base).mean())


def exact_edge(stack: SiteStack, tokens, metric: Metric, clean: list[SiteState], patch: list[SiteState],
               up: Node, down: Node | None, base: torch.Tensor | None = None, job=None) -> float:
    """`m(up patched) - m(up patched, down held)` (mean over rows), the sites between them
    held at their clean activations; `down` None is the metric (every later site held)."""
    B, T = tokens.shape
    last = len(stack.sites) if down is None else down.site
    between = {i: _clean_x(stack, i, clean[i]) for i in range(up.site + 1, last)}
    delta = _patch_delta(stack, up, clean[up.site], patch[up.site].expand(B), T)
    patched = stack.patched(tokens, metric, up.site, delta, between, job)
    if down is None:
        base = stack.metric(tokens, metric, job) if base is None else base
        return float((patched - base).mean())
    held = stack.patched(tokens, metric, up.site, delta, {**between, down.site: _hold(stack, down, clean[down.site], T)},
                         job)
    return float((patched - held).mean())
