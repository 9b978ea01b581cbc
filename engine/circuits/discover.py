"""Finding a circuit for a task and evaluating it: what `saescope circuit` and the Circuit pane run.

`CircuitBuilder` takes a model, SAE views (sites, upstream first) and a task. It
splits the task into discovery and held-out examples, takes the sites' clean and
patch states on the discovery examples (the patch state of single prompts is their
mean, or zero), computes every node's effect (attribution patching or integrated
gradients), and keeps what later requests need: the circuit at any threshold
(`circuit`), the sweep of faithfulness and completeness (`sweep`), and exact
effects of nodes and edges on demand (`verify`). Everything it returns is a
protocol struct.

Notes
- Faithfulness is measured on the held-out examples, with nodes outside a circuit
  set to their means over the discovery examples' patch prompts (per position).
- Edges are computed for the nodes of the circuit shown (one backward pass per
  downstream feature node), at most `MAX_EDGE_NODES` of them, largest first.
- The default edge threshold is a quarter of the node threshold (a mask circuit's: a
  quarter of its nodes' median |effect|).
- For single-prompt tasks the nodes outside a circuit take the patch state: the mean
  over the discovery prompts (`patch_state="mean"`) or zero.
- `method="mask"` (engine/circuits/mask.py) chooses the circuit by training a mask for
  the metric instead of thresholding effects: the sweep trains one mask per lambda
  of `LAMBDAS` (error terms clean, then at their means), a threshold is a lambda,
  and node effects (attribution, per position) only order the nodes and give edges.
- A task whose states would not fit `MAX_STATE_BYTES` is refused before any pass:
  the states, gradients and passes hold every discovery example at once.
"""

from __future__ import annotations

import math

import torch

from engine.ablate import Site
from engine.circuits import effects as fx
from engine.circuits import evaluate as ev
from engine.circuits.effects import ERROR, Node, NodeEffects
from engine.circuits.mask import LAMBDAS, MASK_LAMBDA, MaskResult, empty_span, train_mask
from engine.circuits.stack import Metric, SiteStack
from engine.circuits.tasks import Task
from engine.errors import UserError
from engine.protocol import (CIRCUIT_METRIC_NODE, CIRCUIT_TARGET_FAITHFULNESS, CircuitCrossings, CircuitEdge,
                             CircuitFigures, CircuitFindParams, CircuitFound, CircuitNode, CircuitVerified,
                             CurvePoint, SiteInfo, VerifiedEdge, VerifiedNode)

MAX_EDGE_NODES = 400
MAX_STATE_BYTES = 2 << 30


def site_names(hooks: list[str], paths: list[str]) -> list[str]:
    """The sites' short labels: the hook's last part (`mlp_out`); where two would
    share one, with the layer (`L7.resid_post`); where they still would, the SAE
    folder's name as well."""
    from engine.ablate import hook_order

    names = [h.split(".")[-1].removeprefix("hook_") for h in hooks]
    if len(set(names)) < len(names):
        names = [f"L{hook_order(h)[0]}.{n}" if hook_order(h)[0] >= 0 else n for h, n in zip(hooks, names)]
    if len(set(names)) < len(names):
        names = [f"{n}:{p.rstrip('/').split('/')[-1]}" for n, p in zip(names, paths)]
    return names


class CircuitBuilder:
    def __init__(self, lm, views: list, paths: list[str], task: Task, params: CircuitFindParams, job=None):
        from engine.jobs import as_job

        job = as_job(job)
        if params.method == "mask" and not params.per_position:
            import msgspec

            params = msgspec.structs.replace(params, per_position=True)  # a mask is over (position, latent)
        if params.ig_steps < 1:
            raise UserError("--ig-steps must be at least 1")
        if params.mask_steps < 1:
            raise UserError("--mask-steps must be at least 1")
        if params.points < 2 or params.max_nodes < 1:
            raise UserError("a sweep needs at least 2 points and max_nodes of at least 1")
        width = sum(v.sae.cfg.d_sae + v.sae.cfg.d_in for v in views)
        need = 4 * 4 * len(task) * task.length * width  # clean, patch and gradients of features and errors, fp32
        if need > MAX_STATE_BYTES:
            raise UserError(f"the task is too large for one pass: {len(task)} examples x {task.length} tokens x "
                            f"{width} features and widths need about {need / 2**30:.1f} GiB; use fewer pairs "
                            f"(at most about {int(len(task) * MAX_STATE_BYTES / need)})")
        from engine.saes import check_fits

        for v, path in zip(views, paths):
            hook = check_fits(v.sae, lm)
            if hook.endswith("hook_z"):
                raise UserError(f"{path} reads attention heads (hook_z): circuit sites are activations of one "
                                "vector per position (resid_pre/mid/post, attn_out, mlp_out)")
        names = site_names([v.sae.cfg.metadata.hook_name for v in views], paths)
        if len(set(names)) < len(names):
            raise UserError("two sites are the same SAE: " + ", ".join(paths))
        self.views, self.paths, self.params, self.lm = views, paths, params, lm
        self.stack = SiteStack(lm, [Site(n, v.sae.cfg.metadata.hook_name, v.sae) for n, v in zip(names, views)])
        self.task = task
        self.disc, self.held = task.split()
        self.metric = Metric(self.disc.clean_answers, self.disc.patch_answers)
        job.progress(0.0, "states of the sites")
        with torch.no_grad():
            self.clean, _ = self.stack.states(self.disc.clean, job)
            if task.kind == "pairs":
                self.patch, _ = self.stack.states(self.disc.patch, job)
            else:
                self.patch = [c.mean() if params.patch_state == "mean" else c.zeros() for c in self.clean]
        self.means = [p.mean() for p in self.patch]
        job.check()
        if params.method == "ig":
            raw = fx.integrated_gradients(self.stack, self.disc.clean, self.metric, self.clean, self.patch,
                                          params.ig_steps, job=job.span(0.0, 0.5))
            _, self.feature_grads = fx.attribution(self.stack, self.disc.clean, self.metric, self.clean,
                                                   self.patch, job)
        else:
            raw, self.feature_grads = fx.attribution(self.stack, self.disc.clean, self.metric, self.clean,
                                                     self.patch, job)
        self.raw: NodeEffects = raw
        self.effects: NodeEffects = raw if params.per_position else raw.summed()
        self.edges = fx.Edges(self.stack, self.disc.clean, self.metric, self.clean, self.patch, self.feature_grads,
                              params.per_position)
        held_metric = Metric(self.held.clean_answers, self.held.patch_answers)
        self.evaluator = ev.Evaluator(self.stack, self.held.clean, held_metric, self.means, job)
        self.curve: list[ev.Point] = []
        self.curve_features: list[ev.Point] = []
        self.complete = True
        self.base = None  # the model's metric on the discovery examples, for exact effects
        self.masks: dict[tuple[float, bool], MaskResult] = {}  # mask circuits by (lambda, clean errors)
        self._mask_fit: tuple[torch.Tensor, float] | None = None  # the masks' target and span

    # ---- nodes ----------------------------------------------------------------------
    def node_id(self, node: Node) -> str:
        name = self.stack.sites[node.site].name
        what = "error" if node.feature == ERROR else str(node.feature)
        return f"{name}/{what}" + ("" if node.position is None else f"@{node.position - 1}")

    def parse_id(self, text: str) -> Node:
        names = [s.name for s in self.stack.sites]
        site, _, rest = text.rpartition("/")
        if site not in names:
            raise UserError(f"no node {text!r}: a node is SITE/FEATURE, SITE/error or SITE/FEATURE@POSITION "
                            f"with SITE one of {', '.join(names)}")
        what, _, pos = rest.partition("@")
        try:
            feature = ERROR if what == "error" else int(what)
        except ValueError:
            raise UserError(f"no node {text!r}: the feature is a number or `error`") from None
        try:
            position = int(pos) + 1 if pos else None
        except ValueError:
            raise UserError(f"no node {text!r}: the position after @ is a number") from None
        i = names.index(site)
        d_sae = self.stack.sites[i].sae.cfg.d_sae
        if feature != ERROR and not 0 <= feature < d_sae:
            raise UserError(f"feature {feature} is out of range: {site} has features 0..{d_sae - 1}")
        T = self.task.length
        if self.params.per_position and (position is None or not 1 <= position < T):
            raise UserError(f"node {text!r} needs a position 0..{T - 2} (the circuit is per position)")
        if not self.params.per_position and position is not None:
            raise UserError(f"node {text!r} has a position, but the circuit sums over positions")
        return Node(i, feature, position)

    def estimate(self, node: Node) -> float:
        if node.feature == ERROR:
            e = self.effects.errors[node.site]
            return float(e[0] if node.position is None else e[node.position])
        f = self.effects.features[node.site]
        return float(f[node.feature] if node.position is None else f[node.position, node.feature])

    def kept_nodes(self, keep: dict) -> list[Node]:
        out = []
        for i, k in keep.items():
            if self.params.per_position:
                out += [Node(i, int(f), int(p)) for p, f in k.f.nonzero().tolist()]
                out += [Node(i, ERROR, int(p)) for p in k.e.nonzero().flatten().tolist()]
            else:
                out += [Node(i, int(f), None) for f in k.f.nonzero().flatten().tolist()]
                if bool(k.e.any()):
                    out.append(Node(i, ERROR, None))
        return sorted(out, key=lambda n: -abs(self.estimate(n)))

    def describe(self, node: Node) -> str:
        view = self.views[node.site]
        if node.feature == ERROR or view.index is None:
            return ""
        return view.description(node.feature)

    # ---- circuits ---------------------------------------------------------------------
    def sweep(self, job=None) -> None:
        """Both curves; a cancel keeps the points done (and marks the result incomplete)."""
        from engine.jobs import Cancelled, as_job

        job = as_job(job)
        self.curve, self.curve_features = [], []
        try:
            if self.params.method == "mask":
                self._mask_sweep(job)
            else:
                ev.sweep(self.evaluator, self.effects, True, self.params.max_nodes, self.params.points,
                         job.span(0.0, 0.5), self.curve)
                ev.sweep(self.evaluator, self.effects, False, self.params.max_nodes, self.params.points,
                         job.span(0.5, 1.0), self.curve_features)
            self.complete = True
        except Cancelled:
            self.complete = False

    def _mask_sweep(self, job) -> None:
        """A mask per lambda of `LAMBDAS`, error terms kept clean (`curve`) and at their means
        (`curve_features`), each evaluated on the held-out examples."""
        runs = [(errors, lam) for errors in (True, False) for lam in LAMBDAS]
        for k, (errors, lam) in enumerate(runs):
            keep = self.mask(lam, errors, job.span(k / len(runs), (k + 1) / len(runs))).keep()
            m_c, _, faith, comp = self.evaluator.evaluate(keep, job)
            nodes, feats = ev.size(keep, False)
            (self.curve if errors else self.curve_features).append(
                ev.Point(lam, nodes, feats, faith, comp, self.evaluator.baseline.plain(m_c)))

    def mask(self, lam: float, errors: bool, job=None) -> MaskResult:
        """The mask circuit at `lam` (error terms clean with `errors`), trained once."""
        key = (float(lam), bool(errors))
        if key not in self.masks:
            tokens = self.disc.clean
            if self._mask_fit is None:
                target = self.stack.metric(tokens, self.metric, job)
                self._mask_fit = (target, empty_span(self.stack, tokens, self.metric, self.means, target, job))
            target, span = self._mask_fit
            self.masks[key] = train_mask(self.stack, tokens, self.metric, self.means, lam, errors,
                                         self.params.mask_steps, span=span, target=target, job=job)
        return self.masks[key]

    def default_threshold(self, errors: bool) -> float:
        """The smallest swept circuit reaching the target faithfulness, else the largest."""
        curve = self.curve if errors else self.curve_features
        if not curve and self.params.method == "mask":
            return MASK_LAMBDA
        if not curve:
            values = ev.magnitudes(self.effects, errors)
            return ev.threshold_for(values, min(len(values), 20)) if len(values) else 0.0
        hits = [p for p in curve if p.faithfulness >= CIRCUIT_TARGET_FAITHFULNESS]
        return min(hits, key=lambda p: p.nodes).threshold if hits else max(curve, key=lambda p: p.nodes).threshold

    def circuit(self, threshold: float, errors: bool, edge_threshold: float | None = None, job=None,
                new_edges: bool = True) -> CircuitFound:
        """The circuit at `threshold`, evaluated; without `new_edges` only the edges
        computed before (and those to the metric) are given."""
        for name, value in (("threshold", threshold), ("edge threshold", edge_threshold)):
            if value is not None and (not math.isfinite(value) or value < 0):
                raise UserError(f"a {name} is a number >= 0, got {value}")
        if self.params.method == "mask":
            keep = self.mask(threshold, errors, job).keep()
            if not any(bool(k.f.any()) for k in keep.values()):
                raise UserError(f"the mask at lambda {threshold:g} keeps no latent: lower lambda")
        else:
            keep = ev.keep_masks(self.effects, threshold, errors)
        nodes = self.kept_nodes(keep)
        if not nodes:
            top = float(ev.magnitudes(self.effects, errors).max()) if len(ev.magnitudes(self.effects, errors)) else 0
            raise UserError(f"threshold {threshold:g} keeps no node (the largest |effect| is {top:.4g}): "
                            "lower it")
        m_c, m_rest, faith, comp = self.evaluator.evaluate(keep, job)
        n_nodes, n_feats = ev.size(keep, not self.params.per_position)
        figures = CircuitFigures(threshold, n_nodes, n_feats, self.evaluator.baseline.model,
                                 self.evaluator.baseline.empty, m_c, m_rest, faith, comp,
                                 self.evaluator.baseline.plain(m_c))
        if edge_threshold is None and self.params.method == "mask":  # lambda is no effect size
            edge_threshold = float(torch.tensor([abs(self.estimate(n)) for n in nodes]).median()) / 4
        edge_threshold = threshold / 4 if edge_threshold is None else edge_threshold
        edges = self.edges.among(nodes[:MAX_EDGE_NODES], job, compute=new_edges)
        wire_edges = [CircuitEdge(self.node_id(u), CIRCUIT_METRIC_NODE if d is None else self.node_id(d), e)
                      for u, d, e in edges if abs(e) > edge_threshold]
        return self._found(nodes, wire_edges, figures, errors, edge_threshold)

    def _found(self, nodes, edges, figures, errors, edge_threshold) -> CircuitFound:
        p, t = self.params, self.task
        tokens = self.lm.model.to_str_tokens(t.clean[0])[1:]
        metric = ("logit(patch answer) - logit(clean answer)" if t.kind == "pairs" else "logit(answer)")
        point = lambda q: CurvePoint(q.threshold, q.nodes, q.features, q.faithfulness, q.completeness,  # noqa: E731
                                     q.plain)
        cross = CircuitCrossings(ev.crossing(self.curve, 0.5), ev.crossing(self.curve, 0.8),
                                 ev.crossing(self.curve_features, 0.5), ev.crossing(self.curve_features, 0.8))
        return CircuitFound(
            circuit=p.circuit, task=t.name, method=p.method, metric=metric, pairs=len(self.disc),
            held_out=len(self.held), tokens=tokens,
            sites=[SiteInfo(s.name, s.hook, path) for s, path in zip(self.stack.sites, self.paths)],
            errors=errors, per_position=p.per_position, edge_threshold=edge_threshold,
            nodes=[CircuitNode(self.node_id(n), self.stack.sites[n.site].name, n.site, self.estimate(n),
                               None if n.feature == ERROR else n.feature,
                               None if n.position is None else n.position - 1, self.describe(n)) for n in nodes],
            edges=edges, figures=figures, curve=[point(q) for q in self.curve],
            curve_features=[point(q) for q in self.curve_features], crossings=cross, complete=self.complete)

    # ---- exact ------------------------------------------------------------------------
    def verify(self, node_ids: list[str], edge_ids: list[list[str]], job=None) -> CircuitVerified:
        from engine.jobs import as_job

        job = as_job(job)
        nodes = [self.parse_id(i) for i in node_ids]
        pairs = []
        for pair in edge_ids:
            if len(pair) != 2:
                raise UserError(f"an edge is [source, target], got {pair}")
            up = self.parse_id(pair[0])
            down = None if pair[1] == CIRCUIT_METRIC_NODE else self.parse_id(pair[1])
            if down is not None and (down.site <= up.site or down.feature == ERROR):
                raise UserError(f"no edge {pair[0]} -> {pair[1]}: edges go to a later site's feature or the metric")
            pairs.append((up, down))
        args = (self.stack, self.disc.clean, self.metric, self.clean, self.patch)
        if self.base is None:
            self.base = self.stack.metric(self.disc.clean, self.metric, job)
        total = len(nodes) + len(pairs)
        out_nodes = []
        for k, n in enumerate(nodes):
            job.check()
            out_nodes.append(VerifiedNode(self.node_id(n), self.estimate(n),
                                          fx.exact_node(*args, n, self.base, job)))
            job.progress((k + 1) / total, "exact node effects", step=k + 1, total=total)
        out_edges = []
        if pairs:
            self.edges.ensure([d for _, d in pairs if d is not None], job)
            for k, (u, d) in enumerate(pairs):
                job.check()
                out_edges.append(VerifiedEdge(self.node_id(u), CIRCUIT_METRIC_NODE if d is None else self.node_id(d),
                                              self.edges.effect(u, d), fx.exact_edge(*args, u, d, self.base, job)))
                job.progress((len(nodes) + k + 1) / total, "exact edge effects", step=len(nodes) + k + 1, total=total)
        return CircuitVerified(out_nodes, out_edges, spearman([(v.estimate, v.exact) for v in out_nodes]),
                               spearman([(v.estimate, v.exact) for v in out_edges]))


def spearman(pairs: list[tuple[float, float]]) -> float | None:
    if len(pairs) < 3:
        return None
    from scipy.stats import spearmanr

    r = spearmanr([a for a, _ in pairs], [b for _, b in pairs]).statistic
    return None if r != r else float(r)


def find_circuit(lm, views: list, paths: list[str], task: Task, params: CircuitFindParams, job=None
                 ) -> tuple[CircuitBuilder, CircuitFound]:
    """Effects, the sweep (when asked for or without a threshold) and the circuit shown."""
    from engine.jobs import as_job

    job = as_job(job)
    builder = CircuitBuilder(lm, views, paths, task, params, job.span(0.0, 0.3))
    if params.sweep or params.threshold is None:
        builder.sweep(job.span(0.3, 0.9))
    threshold = params.threshold if params.threshold is not None else builder.default_threshold(params.errors)
    # a cancelled sweep still answers with what it finished: the circuit's two ablated
    # passes and its edges to the metric (one more) run under a job the cancel no longer
    # stops; edges between nodes wait for the next threshold
    if builder.complete:
        return builder, builder.circuit(threshold, params.errors, params.edge_threshold, job.span(0.9, 1.0))
    return builder, builder.circuit(threshold, params.errors, params.edge_threshold, None, new_edges=False)
