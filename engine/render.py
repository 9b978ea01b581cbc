"""Rich renderings for the headless commands (the TUI draws its own from the same data)."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text


def shade(tokens: list[str], acts: list[float], peak: float, mark: int | None = None) -> Text:
    """Tokens with a background whose strength follows the activation (0..peak)."""
    text = Text()
    for i, (tok, a) in enumerate(zip(tokens, acts)):
        level = 0.0 if peak <= 0 else max(0.0, min(1.0, a / peak))
        shown = tok.replace("\n", "⏎").replace("\t", "→")
        style = f"on rgb({int(40 + 200 * level)},{int(40 + 60 * level)},40)" if level > 0 else ""
        if i == mark:
            style += " bold underline"
        text.append(shown, style=style.strip() or None)
    return text


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


def render_feature_page(page: dict, dead: dict | None = None) -> Group:
    """`dead`: the SAE's dead fraction (`SaeView.dead_figure`), shown under the head."""
    head = Text.assemble((f"feature {page['feature']}", "bold"), f"  of {page['d_sae']}  {page['hook']}\n",
                         f"density {page['density']:.3%} of {page['index_tokens']:,} indexed tokens  "
                         f"max {page['max_activation']:.3f}  "
                         f"mean (when firing) {page['mean_activation']:.3f}  top tokens {page['description']}\n",
                         (dead_text(dead), "dim"))
    examples = Table("max", "context (activation shaded)", title="top examples", expand=True, show_lines=False)
    for e in page["examples"]:
        examples.add_row(f"{e['max']:.2f}", shade(e["tokens"], e["acts"], page["max_activation"], e["position"]))
    samples = Table("act", "context", title="a random sample of other firing windows", expand=True)
    for e in page["samples"]:
        samples.add_row(f"{e['max']:.2f}", shade(e["tokens"], e["acts"], page["max_activation"], e["position"]))
    counts = page["histogram"]["counts"]
    nz = [i for i, c in enumerate(counts) if c]
    hist = Text("histogram (log10 activation): ")
    if nz:
        lo, hi = nz[0], nz[-1] + 1
        edges = page["histogram"]["edges"]
        hist.append(f"{edges[lo]:.3g} {sparkline(counts[lo:hi])} {edges[hi]:.3g}")
    logits = Table("boosts", "", "suppresses", "", title="logit effects (direct path)")
    for t, b in zip(page["logits"]["top"], page["logits"]["bottom"]):
        logits.add_row(repr(t["token"]), f"{t['value']:+.3f}", repr(b["token"]), f"{b['value']:+.3f}")
    neighbours = Text("neighbours: " + "  ".join(f"#{n['feature']} ({n['cosine']:.2f})" for n in page["neighbours"]))
    return Group(head, examples, samples, hist, logits, neighbours)


def node_text(n: dict) -> str:
    node = n["node"]
    kind = node["kind"]
    if kind == "feature":
        head = f"{node['site']} #{node['feature']}"
    elif kind == "error":
        head = f"{node['site']} error term"
    elif kind == "logit":
        head = f"logit {node['token']!r}"
    elif kind == "ablation":
        head = f"ablate {node['site']} {', '.join('#' + str(f) for f in node['features'])} ({node['mode']})"
    else:
        head = node.get("metric", kind)
    eff = "" if n["method"] == "value" else f" {n['effect']:+.4f}"
    tag = {"exact": " (exact)", "attribution": " (attr)", "value": f" = {n['effect']:.3f}"}.get(n["method"], "")
    desc = f"  {n['description']}" if n.get("description") else ""
    return f"{head}{eff}{tag}{desc}"


def render_tree(result: dict):
    from rich.tree import Tree

    title = (f"[bold]{result['prompt']!r}[/] @ {result['position']} "
             f"({result['tokens'][result['position']]!r}) -> {result['predicted']!r}  "
             f"method {result['method']}, mode {result['mode']}")
    root = Tree(title)

    def add(parent, n):
        branch = parent.add(node_text(n), style="red" if n["effect"] < 0 and n["method"] != "value" else None)
        for c in n.get("children") or []:
            add(branch, c)
    add(root, result["tree"])
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
