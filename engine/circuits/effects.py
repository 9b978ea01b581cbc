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
downstream node gives its edges from every upstream node at once (`Edges`, which
keeps them). Edges to the metric are the direct effects (`SiteStack.gradients(direct=True)`). Error terms are leaves:
they have edges out, none in. `exact_edge` measures an edge by two patched passes:
`m(u patched) - m(u patched, d held at clean)`, sites between them held.

Effects have shape [T, S] (features) and [T] (error terms) per site; position 0 (the
BOS) is never a node and its effects are 0. `summed` adds the positions up.

Notes
- Gradients are taken at the clean point. A TopK (or JumpReLU) feature that is off
  there has no gradient, so a downstream feature that the patch switches on gets no
  incoming edge however large its own effect (its exact effect and `exact_edge` see
  it); the measured edges are then low, by up to 2-3x on the default model.
- With integrated gradients for the nodes, edges still use the clean-point gradients
  (attribution patching), as `CircuitFound.method` says for the nodes only.
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


class Edges:
    """Edge effects, computed once per downstream node and kept: the backward pass of a
    downstream node gives its edges from every upstream node (kept or not), so a circuit
    at another threshold only runs the passes of its new downstream nodes.

    `rows[d]` holds, per upstream site, `grad . (patch - clean)` for every feature
    ([S], or [T, S] per position) and the error term ([1], or [T]), averaged over rows;
    `d` None is the metric (direct effects)."""

    def __init__(self, stack: SiteStack, tokens, metric: Metric, clean: list[SiteState], patch: list[SiteState],
                 feature_grads: list[torch.Tensor], per_position: bool):
        self.stack, self.tokens, self.metric, self.clean = stack, tokens, metric, clean
        self.patch = [p.expand(tokens.shape[0]) for p in patch]
        self.feature_grads, self.per_position = feature_grads, per_position
        self.rows: dict[Node | None, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def _contract(self, i: int, gf: torch.Tensor, ge: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        c, p = self.clean[i], self.patch[i]
        B = gf.shape[0]
        f = ((p.f - c.f) * gf)[:, 1:].sum(0) / B  # [T - 1, S]: the BOS is never a node
        e = ((p.e - c.e) * ge)[:, 1:].sum((0, 2)) / B
        if self.per_position:
            return torch.cat([torch.zeros_like(f[:1]), f]), torch.cat([torch.zeros_like(e[:1]), e])
        return f.sum(0), e.sum(0, keepdim=True)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for row in self.rows.values() for pair in row for t in pair)

    def ensure(self, nodes: list[Node], job=None) -> None:
        """Compute the rows of the metric and of the feature nodes among `nodes` that
        have upstream sites and no row yet."""
        from engine.jobs import as_job

        job = as_job(job)
        if None not in self.rows:
            gf, ge, _ = self.stack.gradients(self.tokens, self.metric, direct=True, job=job)
            self.rows[None] = [self._contract(i, gf[i], ge[i]) for i in range(len(self.stack.sites))]
        todo = [n for n in nodes if n.feature != ERROR and n.site > 0 and n not in self.rows]
        T, done = self.tokens.shape[1], 0
        for site in sorted({n.site for n in todo}):
            with torch.enable_grad():
                leaves, f_down = self.stack.edge_graph(self.tokens, site, job)
                flat = [t for pair in leaves for t in pair]
                for d in (n for n in todo if n.site == site):
                    job.check()
                    pos = d.positions(T)
                    weight = self.feature_grads[site][:, pos, d.feature].detach()
                    value = (weight * f_down[:, pos, d.feature]).sum()  # summed over rows, like the metric
                    grads = torch.autograd.grad(value, flat, retain_graph=True, allow_unused=True)
                    grads = [torch.zeros_like(t) if g is None else g for g, t in zip(grads, flat)]
                    self.rows[d] = [self._contract(i, grads[2 * i], grads[2 * i + 1]) for i in range(site)]
                    done += 1
                    job.progress(done / len(todo), "edges", step=done, total=len(todo))

    def effect(self, up: Node, down: Node | None) -> float:
        f, e = self.rows[down][up.site]
        at = 0 if up.position is None else up.position
        return float(e[at] if up.feature == ERROR else f[up.feature] if up.position is None else f[at, up.feature])

    def among(self, nodes: list[Node], job=None, compute: bool = True) -> list[tuple[Node, Node | None, float]]:
        """Every edge among `nodes`: `(upstream, downstream, effect)`, downstream None for
        the metric. Without `compute`, only the downstream nodes computed before (and
        the metric's direct effects, one pass) give edges."""
        self.ensure(nodes if compute else [], job)
        out = [(n, None, self.effect(n, None)) for n in nodes]
        for d in nodes:
            if d in self.rows:
                out += [(u, d, self.effect(u, d)) for u in nodes if u.site < d.site]
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
