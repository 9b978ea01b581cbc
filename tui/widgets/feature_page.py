"""One feature's page: a fixed head (number, density, maximum, top tokens and the
numbered neighbours) over a scrolling body (top examples, the histogram beside the
logit tables, a random sample of other firing windows).

Notes
- The head stays put while the body scrolls, so the neighbours' numbers (keys 1-8
  jump to them) are always on screen, even at 80x24.
- Everything shown comes from one `feature.page` result; nothing is computed here
  but layout.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.widgets import Static

from engine.protocol import FeaturePage as Page
from engine.protocol import LogitEffects, Neighbour
from engine.figures import dead_label, rule
from tui.text import visible_token
from tui.widgets.example_list import ExampleList
from tui.widgets.histogram_view import HistogramView

N_NEIGHBOURS = 8
TOKEN_WIDTH = 11


def logit_table(logits: LogitEffects) -> Table | Text:
    if logits.note or not logits.top:
        return Text(logits.note or "no logit effects", style="dim")
    table = Table(box=None, padding=(0, 1, 0, 0), show_edge=False, expand=True)
    table.add_column(Text("boosts", style="bold dim"), no_wrap=True, width=TOKEN_WIDTH)
    table.add_column("", justify="right", no_wrap=True, width=6)
    table.add_column(Text("suppresses", style="bold dim"), no_wrap=True, width=TOKEN_WIDTH)
    table.add_column("", justify="right", no_wrap=True, width=6)
    for up, down in zip(logits.top, logits.bottom):
        table.add_row(Text(visible_token(up.token), overflow="ellipsis"), Text(f"{up.value:+.2f}", style="green"),
                      Text(visible_token(down.token), overflow="ellipsis"),
                      Text(f"{down.value:+.2f}".replace("-", "−"), style="red"))
    return table


def neighbours_text(neighbours: list[Neighbour], width: int) -> Text:
    """`near 1 #12 .41 2 #873 .38 …`: the cosines are dropped when all eight do not fit."""
    for with_cosine in (True, False):
        text = Text("near", style="dim")
        for i, n in enumerate(neighbours[:N_NEIGHBOURS], 1):
            text.append(f" {i}", style="bold reverse")
            text.append(f"#{n.feature}")
            if with_cosine:
                text.append(f" {n.cosine:.2f}".replace("0.", "."), style="dim")
        if text.cell_len <= width:
            break
    return text


def dead_text(dead: tuple[float, int] | None) -> str:
    """The SAE's dead fraction (`engine.figures`: never fired on the first
    `DEAD_TOKENS` held-out tokens), as its saved evaluation holds it."""
    if dead is None:
        return "dead –"
    return f"{dead_label(dead[1])} {dead[0]:.1%}"


def head_text(page: Page, alive: int | None = None, width: int = 80,
              dead: tuple[float, int] | None = None) -> Text:
    """`alive`: features firing in the index (its tokens, not the held-out ones);
    `dead`: the SAE's (dead fraction, its tokens), the number `saescope eval` and the
    Train pane show."""
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"#{page.feature}", style="bold cyan")
    alive_text = f" · {alive} fire in index" if alive is not None else ""
    text.append(f" of {page.d_sae} · {dead_text(dead)}{alive_text} · {page.hook} · "
                f"{page.index_tokens:,} tokens indexed", style="dim")
    text.append("\n")
    if page.fire_count == 0:
        text.append("never fires in the index", style="bold red")
    else:
        text.append(f"density {page.density:.3%} · max {page.max_activation:.2f} · "
                    f"mean {page.mean_activation:.2f}")
    if page.description:
        text.append(" · top ", style="dim")
        text.append(page.description, style="bold")
    text.append("\n")
    text.append_text(neighbours_text(page.neighbours, width))
    return text


class FeaturePage(Vertical):
    DEFAULT_CSS = """
    FeaturePage { height: 1fr; }
    FeaturePage #page-head { height: 3; padding: 0 1; text-wrap: nowrap; text-overflow: ellipsis; }
    FeaturePage #page-body { height: 1fr; padding: 0 1; scrollbar-size-vertical: 1; }
    FeaturePage #page-body:focus { background: $boost; }
    FeaturePage #page-middle { height: auto; margin: 1 0; }
    FeaturePage #page-hist { width: 1fr; margin-right: 1; }
    FeaturePage #page-logits { width: 38; height: auto; }
    FeaturePage .hidden { display: none; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.page: Page | None = None
        self.alive: int | None = None
        self.dead: tuple[float, int] | None = None

    def on_resize(self) -> None:
        if self.page is not None:
            self._draw_head()

    def _draw_head(self) -> None:
        head = self.query_one("#page-head", Static)
        head.update(head_text(self.page, self.alive, max(20, self.size.width - 2), self.dead))
        head.tooltip = (f"{rule('dead_fraction')} (the SAE's saved evaluation; the Train pane's final "
                        "eval and `saescope eval` show the same)\nfire in index: features firing at least "
                        "once on the indexed tokens\ndensity: firings / indexed tokens of this feature")

    def compose(self) -> ComposeResult:
        yield Static("", id="page-head")
        with VerticalScroll(id="page-body"):
            yield ExampleList("top examples", id="page-examples")
            with Horizontal(id="page-middle"):
                yield HistogramView(id="page-hist")
                yield Static("", id="page-logits")
            yield ExampleList("a random sample of other windows where it fires", id="page-samples")

    @property
    def body(self) -> VerticalScroll:
        return self.query_one("#page-body", VerticalScroll)

    def show(self, page: Page, alive: int | None = None, dead: tuple[float, int] | None = None) -> None:
        same_feature = self.page is not None and self.page.feature == page.feature
        self.page, self.alive, self.dead = page, alive, dead
        self._draw_head()
        peak = page.max_activation
        self.query_one("#page-examples", ExampleList).show(page.examples, peak)
        self.query_one("#page-samples", ExampleList).show(page.samples, peak)
        self.query_one(HistogramView).show(page.histogram)
        self.query_one("#page-logits", Static).update(logit_table(page.logits))
        if not same_feature:
            self.body.scroll_home(animate=False)

    def show_message(self, text: str) -> None:
        """A line in place of the head when there is no page to show yet."""
        if self.page is None:
            self.query_one("#page-head", Static).update(Text(text, style="dim"))
