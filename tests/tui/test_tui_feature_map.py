"""The feature map screen driven by the pilot against the shared real engine: the shipped
SAE's map (described from its index, coloured by density), then a run folder with an
emergence record, where `c` switches to the emergence colouring; escape closes."""

from __future__ import annotations

import asyncio
import json
import shutil

from textual.widgets import OptionList, Static

from tests.tui.sae_setup import SHIPPED, TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.screens.feature_map import FeatureMapScreen, open_feature_map
from tui.target import EngineTarget
from tui.widgets.plot_view import PlotView

SAE = SHIPPED / "saes" / "mlp_out-topk"


def test_feature_map_screen(make_app, model_loaded, wait_until, sae_engine, tmp_path):  # noqa: F811
    run = tmp_path / "run"
    run.mkdir()
    for name in ("cfg.json", "sae_weights.safetensors", "sparsity.safetensors"):
        shutil.copy2(SAE / name, run / name)
    steps = [None if i % 7 == 0 else i * 3 for i in range(1024)]
    (run / "emergence.json").write_text(json.dumps({"emergence_step": steps}))

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(100, 36)) as pilot:
            await model_loaded(pilot)
            screen = open_feature_map(app, str(SAE), method="pca")
            await wait_until(pilot, lambda: screen.fmap is not None, 90, "the shipped SAE's map")
            await pilot.pause(0.1)
            fmap = screen.fmap
            assert app.screen is screen and fmap.method == "pca" and len(fmap.clusters) == 12
            assert fmap.described and all(c.description for c in fmap.clusters)
            options = screen.query_one(OptionList)
            assert options.option_count == 12
            assert fmap.clusters[0].description in str(options.get_option_at_index(0).prompt)
            assert any(ch in screen.query_one(PlotView).drawn for ch in "⠁⠂⠄⡀⢀")  # braille points
            assert "log10 firing density" in str(legend_of(screen).render())
            await pilot.press("c")  # no emergence record: the colouring stays
            assert screen.color == "density"
            await pilot.press("escape")
            assert not isinstance(app.screen, FeatureMapScreen)

            screen = open_feature_map(app, str(run), method="pca", clusters=5)
            await wait_until(pilot, lambda: screen.fmap is not None, 60, "the run's map")
            await pilot.pause(0.1)
            assert [c.name for c in screen.fmap.colorings] == ["density", "emergence"]
            assert not screen.fmap.described and "saescope index" in str(screen.query_one("#map-note").render())
            await pilot.press("c")
            assert screen.color == "emergence" and "emergence step" in str(legend_of(screen).render())
            await pilot.press("c")
            assert screen.color == "density"
            await pilot.press("escape")
            assert not isinstance(app.screen, FeatureMapScreen)

    asyncio.run(main())


def legend_of(screen: FeatureMapScreen) -> Static:
    return screen.query_one("#map-legend", Static)
