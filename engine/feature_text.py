"""Rich text for features, drawn from the engine's results (`engine.protocol` structs):
tokens made visible, shaded example windows, the activation histogram (plotext),
and the labels of ablation-tree nodes. The one rendering of feature text: the
TUI's widgets and the CLI (`engine/render.py`) both draw with it.

Notes
- Torch-free (rich, plotext and the protocol only), so the TUI may import it.
- Shading: background strength is the activation over the feature's maximum.
- In example windows spaces stay spaces and deep indentation is cut to two
  cells: a window of code drawn with `·` for every space is hard to read.
- An example is cut to the width it is drawn at, keeping the peak token in view
  with a few tokens after it: the context before the peak is what gets dropped.
- plotext keeps one global figure; it is only used from the UI thread, and built
  colourless, so the bars take the app's colours and snapshots stay stable.
- Tree labels put the effect before the description, so a narrow screen cuts the
  words, not the number; `≈` marks an attributed effect, `=` an exact one.
"""

from __future__ import annotations

import math

from rich.text import Text

from engine.protocol import TreeNode

_WHITESPACE = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})
AFTER_PEAK = 4  # tokens kept after the peak when an example is cut to width
_BLOCKS = "▁▂▃▄▅▆▇█"


def visible_token(token: str) -> str:
    """A token with its whitespace shown: `" f"` -> `"·f"`, `"\\n"` -> `"↵"` (tokens keep
    their leading spaces, which matter: " f" and "f" are different tokens)."""
    if token == "":
        return "∅"
    return token.translate(_WHITESPACE)


def context_token(token: str) -> str:
    """A token as part of running text: newlines and tabs drawn (`↵`, `→`), spaces
    kept as spaces, and long runs of indentation cut to two, so code stays readable."""
    if token == "":
        return "∅"
    out = token.replace("\r", "").replace("\t", "→")
    if "\n" in out:
        parts = out.split("\n")
        out = "↵".join(p if p.strip() else p[:2] for p in parts)
    elif not out.strip() and len(out) > 2:
        out = out[:2]
    return out


def shade_style(act: float, peak: float) -> str | None:
    level = 0.0 if peak <= 0 else max(0.0, min(1.0, act / peak))
    if level <= 0:
        return None
    return f"on rgb({int(40 + 200 * level)},{int(40 + 60 * level)},40)"


def shade(tokens: list[str], acts: list[float], peak: float, mark: int | None = None,
          width: int | None = None) -> Text:
    """Tokens with a background that follows the activation; `mark` is underlined.

    With `width`, tokens before the mark are dropped (shown as `…`) until the
    window, with up to `AFTER_PEAK` tokens after the mark, fits.
    """
    shown = [context_token(t) for t in tokens]
    lo, hi = 0, len(shown)
    if width is not None and mark is not None and 0 <= mark < len(shown):
        hi = min(len(shown), mark + 1 + AFTER_PEAK)
        used = sum(len(s) for s in shown[mark:hi])
        lo = mark
        while lo > 0 and used + len(shown[lo - 1]) + 1 <= width:
            lo -= 1
            used += len(shown[lo])
    text = Text(no_wrap=True, overflow="ellipsis")
    if lo > 0:
        text.append("…", style="dim")
    for i in range(lo, hi):
        style = shade_style(acts[i], peak) or ""
        if i == mark:
            style = (style + " bold underline").strip()
        text.append(shown[i], style=style or None)
    return text


def histogram(edges: list[float], counts: list[int], width: int, height: int) -> Text:
    """The non-zero activation histogram over its occupied log10 bins, as a plotext bar chart."""
    nz = [i for i, c in enumerate(counts) if c]
    if not nz:
        return Text("never fires in the index", style="dim")
    import plotext

    plotext.terminal.limit(False, False)  # the widget, not the real terminal, sets the size
    lo, hi = nz[0], nz[-1] + 1
    centres = [(math.log10(edges[i]) + math.log10(edges[i + 1])) / 2 for i in range(lo, hi)]
    fig = plotext.figure
    fig.clear()
    fig.theme("colorless")
    fig.plot_size(max(width, 20), max(height, 5))
    fig.draw(fig.bar(centres, counts[lo:hi], width=1))
    ticks = [centres[0], centres[len(centres) // 2], centres[-1]] if len(centres) > 2 else centres
    fig.ruler("x").ticks(ticks, [f"{10 ** t:.2g}" for t in ticks])
    top = max(counts)
    fig.ruler("y").ticks([0, top / 2, top], ["0", f"{top / 2:.0f}", str(top)])
    fig.label("activation (log scale)")
    text = Text(fig.build().string(colorless=True).rstrip("\n"), no_wrap=True)
    text.highlight_regex("[" + _BLOCKS + "]+", "cyan")
    return text


def effect_bar(value: float, biggest: float, width: int = 6) -> str:
    """A bar of up to `width` cells for |value| relative to the biggest sibling."""
    if biggest <= 0 or not math.isfinite(value):
        return " " * width
    eighths = round(min(1.0, abs(value) / biggest) * width * 8)
    full, part = divmod(eighths, 8)
    return ("█" * full + (_BLOCKS[part - 1] if part else "")).ljust(width)


def node_head(node: TreeNode) -> str:
    """What a tree node is, in a few words: `mlp_out #123`, `resid_mid error`, `logit '·the'`."""
    n = node.node
    kind = n.kind
    if kind == "feature":
        return f"{n.site} #{n.feature}"
    if kind == "error":
        return f"{n.site} error"
    if kind == "logit":
        token = visible_token(n.token or "")
        return f"logit {token if len(token) <= 9 else token[:8] + '…'}"
    if kind == "ablation":
        feats = ", ".join(f"#{f}" for f in n.features or [])
        return f"ablate {n.site} {feats} ({n.mode})"
    return n.metric or kind


def node_label(node: TreeNode, biggest: float, ablated: bool = False, exact: float | None = None) -> Text:
    """One tree line: head, signed effect (≈ attributed, = exact), a size bar, the
    exact value when a check gave one, and the feature's short description."""
    text = Text(no_wrap=True, overflow="ellipsis")
    if ablated:
        text.append("✗ ", style="bold red")
    head = node_head(node)
    if node.node.kind == "ablation":
        text.append(head, style="bold")
        return text
    if node.method == "value":
        text.append(head, style="bold")
        text.append(f"  = {node.effect:.3f}")
        return text
    effect = node.effect
    colour = "green" if effect > 0 else "red" if effect < 0 else "dim"
    text.append(f"{head:<15}", style="bold" if node.node.kind != "error" else "italic")
    text.append(f" {effect:+.3f}".replace("-", "−"), style=colour)
    text.append(" =" if node.method == "exact" else " ≈", style="dim")
    text.append(" " + effect_bar(effect, biggest), style=colour)
    if exact is not None:
        text.append(f" ={exact:+.3f}".replace("-", "−"), style="dim " + colour)
    if node.description:
        text.append("  " + node.description)
    return text
