"""Training plots as ANSI text at a given size in terminal cells: metric curves, the
emergence curve and the firing-density histogram (plotext), and the density histogram
over training as a shaded grid (plain characters).

No Textual here: widgets turn the text into a `rich.text.Text` with `from_ansi`.

Notes
- plotext 6 keeps one global figure; it is cleared and rebuilt for each plot,
  always on the app's thread. Its limit to the terminal's size is switched off:
  the app, not plotext, knows how big a plot may be.
- Curves are thinned first, to two points per column (braille has two dots a
  cell), so drawing costs the same however long the run is; the last point is
  always kept, and the y range is that of the points drawn.
- Log axes drop values <= 0 (a log axis cannot show them), never fake them.
- Ticks are placed here: x at round token counts labelled `256k`, `2M` (plotext's
  own `2.6e2`, `8.6e4` are hard to read at a glance), y at round values at least
  1.5 rows apart (plotext drops labels that collide).
- Density over time: rows are the histogram's bins, densest on top, two bins a
  row (upper and lower half blocks), neighbouring bins' counts added when the
  rows are too few (drawing, like a bar chart's bins); columns are the histograms
  in time order (thinned evenly to the width, the first and the last kept). A
  cell's shade grows with the square root of its count (the few features in a
  rare bin stay visible beside the crowded ones); the bottom row, in red, is the
  features that did not fire in the window at all.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import plotext as plt

from engine.protocol import DensityHistogram
from tui.training import tokens_label

plt.terminal.limit(False, False)
MIN_WIDTH, MIN_HEIGHT = 16, 4


@dataclass
class Series:
    xs: list[float]
    ys: list[float]
    colour: int
    """A 256-colour code."""


def thin(xs: list[float], ys: list[float], n: int) -> tuple[list[float], list[float]]:
    """At most about `n` evenly strided points (copies), always with the last one."""
    if n <= 0 or len(xs) <= n:
        return list(xs), list(ys)
    stride = math.ceil(len(xs) / n)
    txs, tys = xs[::stride], ys[::stride]
    if (len(xs) - 1) % stride:
        txs.append(xs[-1])
        tys.append(ys[-1])
    return txs, tys


def nice_ticks(lo: float, hi: float, most: int, min_step: float = 0.0) -> list[float]:
    """Two to `most` round ticks (1, 2 or 5 times a power of ten, at least `min_step`
    apart) within [lo, hi]; the two ends when no such ticks fit."""
    if most < 2 or not hi > lo:
        return [lo]
    e = math.floor(math.log10(hi - lo))
    for step in (m * 10.0 ** k for k in range(e - 2, e + 2) for m in (1, 2, 5)):
        if step < min_step:
            continue
        ticks = [round(i * step, 12) for i in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 1)]
        if len(ticks) <= most:
            return ticks if len(ticks) >= 2 else [lo, hi]
    return [lo, hi]


def log_ticks(lo: float, hi: float, rows: int) -> list[float]:
    """Powers of ten within [lo, hi] when it spans two, else round linear ticks (a
    short log range is nearly linear) about 1.5 rows apart."""
    powers = [10.0 ** e for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
              if lo * (1 - 1e-9) <= 10.0 ** e <= hi * (1 + 1e-9)]
    if len(powers) >= 2:
        return powers if len(powers) <= 4 else powers[::math.ceil(len(powers) / 4)]
    return nice_ticks(lo, hi, 4, min_step=1.5 * (hi - lo) / max(1, rows - 1))


def tick_labels(ticks: list[float]) -> list[str]:
    """Short labels with as many decimals as the tick spacing needs."""
    if len(ticks) < 2:
        return [f"{t:.3g}" for t in ticks]
    step = min(abs(b - a) for a, b in zip(ticks, ticks[1:])) or 1.0
    if max(abs(t) for t in ticks) >= 1e5 or step < 1e-4:
        return [f"{t:.0e}" if t != 0 else "0" for t in ticks]
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    return [f"{t:.{decimals}f}" for t in ticks]


def _y_range(series: list[Series], floor: float | None) -> tuple[float, float]:
    lo = min(min(s.ys) for s in series)
    hi = max(max(s.ys) for s in series)
    if floor is not None:
        lo = min(lo, floor)
    if hi <= lo:  # a flat line: give it room
        pad = abs(lo) * 0.1 or 1.0
        lo, hi = (lo, hi + pad) if floor is not None else (lo - pad, hi + pad)
    return lo, hi


def _placeholder(width: int, height: int, title: str, note: str) -> str:
    lines = [title.center(width)[:width]] + [""] * max(0, height - 1)
    if height > 1:
        lines[min(height - 1, max(1, height // 2))] = note.center(width)[:width]
    return "\n".join(lines)


def curves(series: list[Series], width: int, height: int, title: str, log_y: bool = False,
           floor: float | None = None) -> str:
    """One line per series against tokens; `title` on top; `floor`: the y axis starts there.

    A log y axis is drawn as log10 of the values on a linear axis, labelled with the
    values themselves (plotext's own log axis takes limits and ticks in log units).
    """
    series = [Series(*thin(s.xs, s.ys, 2 * width), s.colour) for s in series]
    if log_y:
        series = [Series(*_positive(s.xs, s.ys), s.colour) for s in series]
    series = [s for s in series if s.xs]
    if width < MIN_WIDTH or height < MIN_HEIGHT or not series:
        return _placeholder(width, height, title, "no data yet" if height >= 2 else "")
    y_lo, y_hi = _y_range(series, None if log_y else floor)
    rows = height - 4  # less the title, the frame and the x labels
    if log_y:
        y_ticks = log_ticks(y_lo, y_hi, rows)
        positions = [math.log10(t) for t in y_ticks]
        series = [Series(s.xs, [math.log10(y) for y in s.ys], s.colour) for s in series]
        y_lo, y_hi = math.log10(y_lo), math.log10(y_hi)
    else:
        y_ticks = positions = nice_ticks(y_lo, y_hi, 4, min_step=1.5 * (y_hi - y_lo) / max(1, rows - 1))
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    f.title(title)
    for s in series:
        sig = f.signal(s.xs, s.ys, marker=plt.marker("braille", pixel=plt.pixel(foreground=s.colour)))
        sig.lines()
        f.draw(sig)
    f.ruler("y").lim(y_lo, y_hi)
    f.ruler("y").ticks(positions, tick_labels(y_ticks))
    hi = max(max(s.xs) for s in series)
    if hi > 0:  # tokens from 0, so 0 is always a tick and a second one fits
        ticks = nice_ticks(0, hi, 5, min_step=8 * hi / max(1, width - 8))
        f.ruler("x").lim(0, hi)
        f.ruler("x").ticks(ticks, [tokens_label(t) for t in ticks])
    return f.build().string().rstrip("\n")


def formed(series: list[Series], baselines: list[tuple[float, int]], width: int, height: int,
           title: str) -> str:
    """Emergence curves (fraction of features formed, one line per run against tokens,
    y from 0 to 100%), and each run's random-dictionary baseline `(value, colour)` as a
    dotted flat line."""
    series = [Series(*thin(s.xs, s.ys, 2 * width), s.colour) for s in series if s.xs]
    if width < MIN_WIDTH or height < MIN_HEIGHT or not series:
        return _placeholder(width, height, title, "no emergence yet" if height >= 2 else "")
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    f.title(title[:width])  # (plotext leaves out a title wider than the plot)
    hi = max(max(s.xs) for s in series)
    dots = max(2, (width - 6) // 3)  # a dot every third column: dotted, not a curve
    for value, colour in baselines:
        xs = [hi * i / (dots - 1) for i in range(dots)]
        f.draw(f.signal(xs, [value] * dots, marker=plt.marker("braille", pixel=plt.pixel(foreground=colour))))
    for s in series:
        sig = f.signal(s.xs, s.ys, marker=plt.marker("braille", pixel=plt.pixel(foreground=s.colour)))
        sig.lines()
        f.draw(sig)
    f.ruler("y").lim(0, 1)
    y_ticks = [0, 0.5, 1] if height - 4 >= 3 else [0, 1]
    f.ruler("y").ticks(y_ticks, [f"{t:.0%}" for t in y_ticks])
    if hi > 0:
        ticks = nice_ticks(0, hi, 5, min_step=8 * hi / max(1, width - 8))
        f.ruler("x").lim(0, hi)
        f.ruler("x").ticks(ticks, [tokens_label(t) for t in ticks])
    return f.build().string().rstrip("\n")


SHADES = tuple(range(237, 256, 2))  # grey ramp, dark to light: more features, brighter
DEAD_SHADES = (52, 88, 124, 160, 196)  # the not-fired row: dark to bright red
LABEL_WIDTH = 5


def _shade(count: int, top: int, ramp: tuple[int, ...]) -> int | None:
    if count <= 0:
        return None
    return ramp[min(len(ramp) - 1, math.ceil(math.sqrt(count / top) * len(ramp)) - 1)]


def _cell(upper: int | None, lower: int | None) -> str:
    """One character for two stacked shades (None: empty) with half blocks."""
    if upper is None and lower is None:
        return " "
    if lower is None:
        return f"\x1b[38;5;{upper}m▀\x1b[0m"
    if upper is None:
        return f"\x1b[38;5;{lower}m▄\x1b[0m"
    return f"\x1b[38;5;{upper};48;5;{lower}m▀\x1b[0m"


def density_time(points: list[tuple[int, DensityHistogram]], width: int, height: int, title: str) -> str:
    """The firing-density histogram over training: `points` are (tokens, histogram) in
    time order; rows are density bins (densest on top, labelled with the log10 density
    at their top edge), the last row the features not fired in the window."""
    cols = width - LABEL_WIDTH
    rows = height - 3  # less the title, the not-fired row and the token labels
    if not points or cols < 4 or rows < 2:
        return _placeholder(width, height, title, "no histogram yet" if height >= 2 else "")
    n = min(len(points), cols)  # evenly spaced, the first and the last kept
    shown = [points[round(i * (len(points) - 1) / (n - 1))] for i in range(n)] if n > 1 else points[-1:]
    edges = shown[-1][1].edges
    bins = len(edges) - 1
    per = math.ceil(bins / (2 * rows))  # bins merged into one half-row cell
    cells = math.ceil(bins / per)
    # cell i (0 on top) holds bins [lo, hi) counted from the densest end
    spans = [(max(0, bins - (i + 1) * per), bins - i * per) for i in range(cells)]
    grid = [[sum(h.counts[lo:hi]) for lo, hi in spans] for _, h in shown]
    dead = [h.never_fired for _, h in shown]
    top = max(max(max(col) for col in grid), max(dead), 1)
    width_each = max(1, min(8, cols // len(shown)))
    lines = [title.center(width)[:width]]
    used = math.ceil(cells / 2)
    every = math.ceil(used / 8)  # at most about 8 labels
    for r in range(used):
        label = f"{edges[spans[2 * r][1]]:g}" if r % every == 0 else ""
        row = []
        for col in grid:
            upper = _shade(col[2 * r], top, SHADES)
            lower = _shade(col[2 * r + 1], top, SHADES) if 2 * r + 1 < cells else None
            row.append(_cell(upper, lower) * width_each)
        lines.append(label.rjust(LABEL_WIDTH - 1) + " " + "".join(row))
    row = []
    for count in dead:
        shade = _shade(count, top, DEAD_SHADES)
        row.append((f"\x1b[38;5;{shade}m█\x1b[0m" if shade is not None else "·") * width_each)
    lines.append("none".rjust(LABEL_WIDTH - 1) + " " + "".join(row))
    first, last = tokens_label(shown[0][0]), tokens_label(shown[-1][0])
    span = width_each * len(shown)
    both = len(shown) > 1 and span >= len(first) + len(last) + 1
    lines.append(" " * LABEL_WIDTH + (first + last.rjust(span - len(first)) if both else last))
    return "\n".join(line for line in lines[:height])


def _positive(xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    keep = [(x, y) for x, y in zip(xs, ys) if y > 0]
    return [x for x, _ in keep], [y for _, y in keep]


def density(hist: DensityHistogram | None, width: int, height: int, title: str, colour: int = 39) -> str:
    """The engine's `density_histogram` (`edges`, `counts`, `never_fired`) as bars."""
    if hist is None or width < MIN_WIDTH or height < MIN_HEIGHT:
        return _placeholder(width, height, title, "no histogram yet" if height >= 2 else "")
    edges, counts = hist.edges, hist.counts
    centres = [(a + b) / 2 for a, b in zip(edges, edges[1:])]
    f = plt.figure
    f.clear()
    f.theme("simple")
    f.plot_size(width, height)
    f.title(title)
    f.draw(f.bar(centres, counts, width=1, marker=plt.marker("full", pixel=plt.pixel(foreground=colour))))
    lo, hi = edges[0], edges[-1]
    ticks = [t for t in range(math.ceil(lo), math.floor(hi) + 1)]
    if len(ticks) > width // 6:
        ticks = ticks[::2] if ticks[-1] % 2 else ticks[::-1][::2][::-1]
    f.ruler("x").lim(lo, hi)
    f.ruler("x").ticks(ticks, [f"{t:g}" for t in ticks])
    top = max(max(counts), 1)
    rows = height - 5  # less the title, the frame, the x labels and the x label line
    y_ticks = nice_ticks(0, top, 4, min_step=max(1.0, 1.5 * top / max(1, rows - 1)))
    f.ruler("y").lim(0, top)
    f.ruler("y").ticks(y_ticks, [f"{t:.0f}" for t in y_ticks])
    f.label("log10 feature density", "x")
    return f.build().string().rstrip("\n")
