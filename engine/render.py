"""Rich renderings for the headless commands: tables and trees around the feature text
of `engine.feature_text`, which the TUI draws with too."""

from __future__ import annotations

import msgspec
from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.feature_text import node_label, shade, visible_token
from engine.protocol import CircuitFound, CircuitVerified, FeaturePage, TreeNode


def sparkline(counts: list[int]) -> str:
    blocks = " ▁▂▃▄▅▆▇█"
    top = max(counts) if counts and max(counts) > 0 else 1
    return "".join(blocks[round(8 * c / top)] for c in counts)


def dead_text(dead: dict | None) -> str:
    """The SAE's dead fraction with its rule's window, or why there is none."""
    from engine.figures import DEAD_TOKENS, dead_label

    if not dead:
        return (f"SAE dead fraction: no saved evaluation over {DEAD_TOKENS:,} held-out tokens "
                "(`saescope eval` measures it)")
    return (f"SAE {dead_label(dead['dead_tokens'], dead.get('dead_context'))} {dead['dead_fraction']:.1%} "
            f"(never fired on {dead['dead_tokens']:,} held-out tokens)")


def render_eval(result: dict, title: str = "") -> Table:
    """`saescope eval`: every figure under its name, with its rule (`engine.figures`)."""
    from engine.figures import FIGURES, dead_label, rule

    table = Table("figure", "value", "rule", title=title)
    for key, value in result.items():
        if key in ("dead_tokens", "dead_context"):
            continue
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        if key == "dead_fraction":
            n = result.get("dead_tokens", result.get("tokens"))
            table.add_row(dead_label(n, result.get("dead_context")), f"{value:.2%}",
                          f"never fired on the first {n:,} held-out tokens")
        elif key in FIGURES:
            table.add_row(FIGURES[key][1], shown, rule(key).split(": ", 1)[1])
        else:
            table.add_row(key, shown, "")
    return table


def render_feature_page(result: dict, dead: dict | None = None) -> Group:
    """A `feature.page` result (as the engine's `FeaturePage`); `dead`: the SAE's dead
    fraction (`SaeView.dead_figure`), shown under the head."""
    page = msgspec.convert(result, FeaturePage)
    head = Text.assemble((f"feature {page.feature}", "bold"), f"  of {page.d_sae}  {page.hook}\n",
                         f"density {page.density:.3%} of {page.index_tokens:,} indexed tokens  "
                         f"max {page.max_activation:.3f}  "
                         f"mean (when firing) {page.mean_activation:.3f}  top tokens {page.description}\n",
                         (dead_text(dead), "dim"))
    examples = Table("max", "context (activation shaded)", title="top examples", expand=True, show_lines=False)
    for e in page.examples:
        examples.add_row(f"{e.max:.2f}", shade(e.tokens, e.acts, page.max_activation, e.position))
    samples = Table("act", "context", title="a random sample of other firing windows", expand=True)
    for e in page.samples:
        samples.add_row(f"{e.max:.2f}", shade(e.tokens, e.acts, page.max_activation, e.position))
    counts = page.histogram.counts
    nz = [i for i, c in enumerate(counts) if c]
    hist = Text("histogram (log10 activation): ")
    if nz:
        lo, hi = nz[0], nz[-1] + 1
        edges = page.histogram.edges
        hist.append(f"{edges[lo]:.3g} {sparkline(counts[lo:hi])} {edges[hi]:.3g}")
    logits = Table("boosts", "", "suppresses", "", title="logit effects (direct path)")
    for t, b in zip(page.logits.top, page.logits.bottom):
        logits.add_row(visible_token(t.token), f"{t.value:+.3f}", visible_token(b.token), f"{b.value:+.3f}")
    neighbours = Text("neighbours: " + "  ".join(f"#{n.feature} ({n.cosine:.2f})" for n in page.neighbours))
    return Group(head, examples, samples, hist, logits, neighbours)


def render_tree(result: dict):
    """`saescope ablate`: the tree drawn with the Ablation pane's node labels."""
    from rich.tree import Tree

    title = (f"[bold]{result['prompt']!r}[/] @ {result['position']} "
             f"({result['tokens'][result['position']]!r}) -> {result['predicted']!r}  "
             f"method {result['method']}, mode {result['mode']}  (≈ attributed, = exact)")
    root = Tree(title)

    def add(parent, n: TreeNode, biggest: float):
        branch = parent.add(node_label(n, biggest))
        kids = n.children or []
        most = max((abs(c.effect) for c in kids), default=0.0)
        for c in kids:
            add(branch, c, most)
    add(root, msgspec.convert(result["tree"], TreeNode), 0.0)
    return root


def render_uninterpretable(result: dict) -> Group:
    """`saescope ablate --uninterpretable`: the most important features, then those among
    them whose top examples share no obvious token."""
    head = Text.from_markup(f"[bold]{result['prompt']!r}[/] -> {result['predicted']!r}  "
                            f"(effect on that logit, method {result['method']})")

    def table(title: str, rows: list[dict]) -> Table:
        t = Table("site", "feature", "effect", "top-token share", "description", title=title,
                  title_justify="left")
        for r in rows:
            t.add_row(r["site"], f"#{r['feature']}", f"{r['effect']:+.4f}",
                      f"{r['top_token_concentration']:.0%}", r["description"])
        return t

    return Group(head, table("most important", result["most_important"]),
                 table(f"important but not interpretable from their top token "
                       f"(share <= {result['max_concentration']:.0%})",
                       result["uninterpretable"]))


def _fraction(x: float | None) -> str:
    return "—" if x is None or x != x else f"{x:.2f}"


def _errors_note(found: CircuitFound) -> str:
    if found.method == "mask":
        return ", error terms kept clean" if found.errors else ", error terms at their means"
    return "" if found.errors else ", no error nodes"


def render_circuit(found: CircuitFound, verified: CircuitVerified | None = None, top: int = 20) -> Group:
    """`saescope circuit`: the figures, the curves, the largest nodes and edges."""
    f = found.figures
    sites = " → ".join(s.name for s in found.sites)
    head = Text.assemble(
        (f"{found.task}", "bold"), f"  {found.pairs} pairs found on, {found.held_out} held out · {found.method} · ",
        f"metric {found.metric} · sites {sites}\n",
        (f"circuit: {f.nodes} nodes ({f.features} features{_errors_note(found)}) "
         f"at {'lambda' if found.method == 'mask' else 'threshold'} {f.threshold:.4g}  ", "bold"),
        f"faithfulness {_fraction(f.faithfulness)} (m(C)/m(M) {_fraction(f.plain)})  "
        f"completeness {_fraction(f.completeness)}  "
        f"(m: model {f.m_model:.3f}, empty {f.m_empty:.3f}, circuit {f.m_circuit:.3f}, rest {f.m_complement:.3f})")
    parts: list = [head]
    if not found.complete:
        parts.append(Text("the sweep was cancelled: the curves hold the circuits it finished", "yellow"))
    if found.curve or found.curve_features:
        mask = found.method == "mask"
        curve = Table(*(["lambda"] if mask else []), "nodes", "faith.", "compl.", "│",
                      "features only" if not mask else "errors at mean", "faith.", "compl.",
                      title="faithfulness and completeness against circuit size (held-out pairs)"
                            + ("; left: error terms kept clean" if mask else ""))
        rows = max(len(found.curve), len(found.curve_features))
        for i in range(rows):
            a = found.curve[i] if i < len(found.curve) else None
            b = found.curve_features[i] if i < len(found.curve_features) else None
            lam = [f"{(a or b).threshold:g}"] if mask else []
            curve.add_row(*lam, *(("", "", "") if a is None else (str(a.nodes), _fraction(a.faithfulness),
                                                                    _fraction(a.completeness))), "│",
                          *(("", "", "") if b is None else (str(b.features if mask else b.nodes),
                                                              _fraction(b.faithfulness), _fraction(b.completeness))))
        parts.append(curve)
        c = found.crossings
        parts.append(Text(f"faithfulness 0.5 at {c.half or '—'} nodes, 0.8 at {c.most or '—'} nodes; "
                          f"features only: 0.5 at {c.half_features or '—'}, 0.8 at {c.most_features or '—'}"))
    nodes = Table("node", "effect", "description", title=f"largest nodes (of {len(found.nodes)})")
    for n in found.nodes[:top]:
        nodes.add_row(n.id, f"{n.effect:+.4f}", n.description or ("error term" if n.feature is None else ""))
    parts.append(nodes)
    edges = Table("from", "to", "effect", title=f"largest edges (of {len(found.edges)}, |effect| > "
                                               f"{found.edge_threshold:.3g})")
    for e in sorted(found.edges, key=lambda e: -abs(e.effect))[:top]:
        edges.add_row(e.source, e.target, f"{e.effect:+.4f}")
    parts.append(edges)
    if verified is not None:
        check = Table("node or edge", "estimate", "exact", title=(
            f"exact effects by ablation (Spearman: nodes {_fraction(verified.spearman_nodes)}, "
            f"edges {_fraction(verified.spearman_edges)})"))
        for v in verified.nodes:
            check.add_row(v.id, f"{v.estimate:+.4f}", f"{v.exact:+.4f}")
        for v in verified.edges:
            check.add_row(f"{v.source} → {v.target}", f"{v.estimate:+.4f}", f"{v.exact:+.4f}")
        parts.append(check)
    return Group(*parts)
