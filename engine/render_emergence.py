"""Terminal rendering of feature emergence (`saescope emergence`): the curves as a
plotext chart and the figures as a rich table."""

from __future__ import annotations

from rich.console import Group
from rich.table import Table
from rich.text import Text

from engine.figures import tokens_formed
from engine.protocol import Emergence


COLOURS = (39, 208, 70, 170, 226, 203)  # 256-colour codes, one per curve


def emergence_chart(results: list[Emergence], width: int = 78, height: int = 16) -> str:
    """Fraction of final features formed against training tokens, one line per run, the
    random-dictionary baseline flat (and the shared fraction, when asked for)."""
    import plotext as plt

    lines = []
    for r in results:
        lines.append((f"{r.arch} formed", [p.tokens for p in r.points], [p.formed for p in r.points]))
        if r.shared:
            lines.append((f"{r.arch} shared", [p.tokens for p in r.shared], [p.shared for p in r.shared]))
    if results and results[0].points:
        ends = [results[0].points[0].tokens, results[0].points[-1].tokens]
        lines.append(("random", ends, [results[0].baseline_matched] * 2))
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    f.title("fraction of features formed")
    for i, (name, xs, ys) in enumerate(lines):
        colour = COLOURS[i % len(COLOURS)]
        sig = f.signal(xs, ys, marker=plt.marker("braille", pixel=plt.pixel(foreground=colour)))
        sig.lines()
        f.draw(sig)
    f.ruler("y").lim(0, 1)
    f.ruler("y").ticks([0, 0.25, 0.5, 0.75, 1], ["0", ".25", ".5", ".75", "1"])
    hi = max((max(xs) for _, xs, _ in lines), default=0)
    if hi > 0:
        ticks = [hi * i / 4 for i in range(5)]
        f.ruler("x").lim(0, hi)
        f.ruler("x").ticks(ticks, [tokens_label(t) for t in ticks])
    legend = "  ".join(f"\x1b[38;5;{COLOURS[i % len(COLOURS)]}m━━\x1b[0m {name}" for i, (name, _, _) in enumerate(lines))
    return f.build().string().rstrip("\n") + "\n" + legend


def tokens_label(tokens: float) -> str:
    """1.5M, 256k, 900."""
    for unit, size in (("B", 1e9), ("M", 1e6), ("k", 1e3)):
        if tokens >= size:
            return f"{tokens / size:.3g}{unit}"
    return f"{tokens:.0f}"


def render_emergence(results: list[Emergence]) -> Group:
    table = Table(title=f"features formed (decoder cosine >= {results[0].threshold:g} to the "
                        f"{'final' if results[0].reference == 'final' else 'latest'} feature, from then on)")
    for col in ("run", "arch", "snapshots", "25% formed by", "50% by", "90% by", "fired", "random", "method"):
        table.add_column(col, justify="left" if col in ("run", "arch", "method") else "right")
    for r in results:
        table.add_row(r.path.rsplit("/", 1)[-1], r.arch, str(len(r.points)), _tokens_at(r, 0.25),
                      _tokens_at(r, 0.5), _tokens_at(r, 0.9), f"{r.points[-1].fired:.1%}",
                      f"{r.baseline_matched:.1%}", r.method)
    parts = [Text.from_ansi(emergence_chart(results)), table]
    for r in results:
        if r.shared:
            last = r.shared[-1]
            parts.append(Text(f"{r.path.rsplit('/', 1)[-1]} vs {r.against}: {last.shared:.1%} of features "
                              f"shared at cosine >= {r.shared_threshold:g} after {last.tokens:,} tokens "
                              f"(mean matched cosine {last.mean_cosine:.3f})"))
    return Group(*parts)


def _tokens_at(r: Emergence, fraction: float) -> str:
    """The tokens by which `fraction` of the features had formed."""
    tokens = tokens_formed(r.points, fraction)
    return "-" if tokens is None else f"{tokens:,}"
