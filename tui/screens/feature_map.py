"""The feature map of an SAE (`sae.map`): its decoder directions in 2-D, coloured by
firing density or by emergence step, with the list of clusters and their
descriptions. Escape closes; `c` switches the colouring where the run has both.

`open_feature_map(app, path)` is the one entry point (the Train pane calls it for a
run folder): it pushes the screen at once and asks the engine over the app's link.

Notes
- The screen does not know the engine: it is given `load()`, which returns the
  `FeatureMap`; the request runs in a worker of the screen, so closing the screen
  while the map is computed cancels it (in the engine too).
- Switching the colouring redraws from the map already here: `sae.map` sends
  every colouring the SAE has, whichever one was asked for.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Awaitable, Callable

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from engine.protocol import FeatureMap, MapCluster
from tui.client import EngineError
from tui.map_plot import coloring_named, legend, map_plot
from tui.sae_paths import short_name
from tui.widgets.plot_view import PlotView

Load = Callable[[], Awaitable[FeatureMap]]


def head_text(fmap: FeatureMap) -> Text:
    """What the map is: features, method (with PCA's explained variance), clusters."""
    text = Text.assemble((f"{fmap.d_sae} features", "bold"), f" · {fmap.method.upper()}")
    if fmap.explained_variance:
        text.append(" (" + ", ".join(f"PC{i + 1} {v:.1%}" for i, v in enumerate(fmap.explained_variance)) + ")")
    text.append(f" of the unit decoder directions · {len(fmap.clusters)} clusters")
    if fmap.method_note:
        text.append(f" · {fmap.method_note}", style="dim")
    return text


def cluster_text(c: MapCluster) -> Text:
    """One cluster: number, size, median density, and its description (or its central features)."""
    text = Text.assemble((f"{c.id:>2}", "bold"), f" {c.size:>5} features")
    if c.density is not None:
        text.append(f"  density {10 ** c.density:<7.2g}")
    text.append("  " + " ".join(f"#{f}" for f in c.features[:3]), style="dim")
    if c.description:
        text.append(f"  {c.description}", style="italic")
    return text


class FeatureMapScreen(ModalScreen[None]):
    BINDINGS = [
        Binding("escape", "dismiss(None)", "Close", id="map.close"),
        Binding("q", "dismiss(None)", "Close", show=False, id="map.close_q", tooltip="Close the map (as escape)"),
        Binding("c", "cycle_color", "Colouring", id="map.color",
                tooltip="Colour by firing density or by emergence step (runs trained with snapshots)"),
    ]
    DEFAULT_CSS = """
    FeatureMapScreen { align: center middle; }
    FeatureMapScreen > Vertical {
        width: 100%; height: 100%; border: round $primary; background: $surface; padding: 0 1;
    }
    FeatureMapScreen #map-info { height: auto; max-height: 2; }
    FeatureMapScreen #map-info.-error { color: $text-error; }
    FeatureMapScreen #map-plot { height: 2fr; min-height: 6; }
    FeatureMapScreen #map-legend { height: 1; }
    FeatureMapScreen #map-note { height: auto; color: $text-muted; }
    FeatureMapScreen OptionList, FeatureMapScreen OptionList:focus { height: 1fr; min-height: 3; border: none; }
    """

    @dataclass
    class Loaded(Message):
        fmap: FeatureMap

    @dataclass
    class Failed(Message):
        error: str

    def __init__(self, load: Load, name: str = "") -> None:
        super().__init__()
        self.load, self.sae_name = load, name
        self.fmap: FeatureMap | None = None
        self.color = ""
        """The colouring drawn: a `MapColoring.name`, '' before the map comes or without one."""

    def compose(self) -> ComposeResult:
        box = Vertical()
        box.border_title = f"feature map of {self.sae_name}" if self.sae_name else "feature map"
        box.border_subtitle = "c: colouring · esc closes"
        with box:
            yield Static("computing the map…", id="map-info")
            yield PlotView(id="map-plot")
            yield Static("", id="map-legend")
            yield OptionList(id="map-clusters")
            yield Static("", id="map-note")

    def on_mount(self) -> None:
        self.run_worker(self._load(), group="map", exclusive=True, exit_on_error=False)

    async def _load(self) -> None:
        try:
            fmap = await self.load()
        except EngineError as e:
            self.post_message(self.Failed(str(e)))
        else:
            self.post_message(self.Loaded(fmap))

    def on_feature_map_screen_loaded(self, message: Loaded) -> None:
        fmap = self.fmap = message.fmap
        names = [c.name for c in fmap.colorings]
        self.color = fmap.color if fmap.color in names else (names[0] if names else "")
        self.query_one("#map-info", Static).update(head_text(fmap))
        options = self.query_one(OptionList)
        options.clear_options()
        options.add_options([Option(cluster_text(c), id=str(c.id)) for c in fmap.clusters])
        self.query_one("#map-note", Static).update(Text(fmap.description_note))
        self._draw()
        options.focus()

    def on_feature_map_screen_failed(self, message: Failed) -> None:
        info = self.query_one("#map-info", Static)
        info.update(Text(message.error))
        info.add_class("-error")

    def action_cycle_color(self) -> None:
        if self.fmap is None:
            return
        names = [c.name for c in self.fmap.colorings]
        if len(names) < 2:
            missing = "emergence step: the run has no emergence record (train with snapshots)" \
                if "emergence" not in names else "firing density: the SAE has no sparsity file"
            self.notify(f"no other colouring: {missing}", timeout=4)
            return
        self.color = names[(names.index(self.color) + 1) % len(names)]
        self._draw()

    def _draw(self) -> None:
        fmap = self.fmap
        if fmap is None:
            return
        coloring = coloring_named(fmap, self.color)
        self.query_one("#map-legend", Static).update(legend(coloring))
        self.query_one(PlotView).set_draw(lambda width, height: map_plot(fmap, coloring, width, height))


def open_feature_map(app: App, path: str, method: str = "auto", clusters: int = 12) -> FeatureMapScreen:
    """Push the map screen for the SAE (or finished run) folder `path`, as the engine
    sees it, and ask the engine for its map over `app.link`."""

    async def load() -> FeatureMap:
        with contextlib.suppress(EngineError):  # a model still loading describes the clusters once it is in
            await app.link.model_ready()
        return await app.link.run("sae.map", {"path": path, "method": method, "clusters": clusters})

    screen = FeatureMapScreen(load, short_name(path))
    app.push_screen(screen)
    return screen
