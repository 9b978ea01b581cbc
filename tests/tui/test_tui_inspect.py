"""The Inspector pane driven by the pilot against a real engine: a search from the
palette, a feature page, stepping to cached pages without a request, neighbours,
typing a number (and one out of range), live activations, an SAE that fails to
open; and a snapshot at 80x24."""

from __future__ import annotations

import asyncio

from textual.widgets import OptionList, TabbedContent

from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.screens.feature_search import FeatureSearchScreen
from tui.target import EngineTarget
from tui.widgets.example_list import ExampleList
from tui.widgets.inspector_pane import InspectorPane
from tui.widgets.live_view import LiveView
from tui.widgets.token_cursor import TokenCursor


def head(pane: InspectorPane) -> str:
    return str(pane.query_one("#page-head").render())


async def palette(pilot, text: str) -> None:
    await pilot.press("ctrl+p")
    await pilot.press(*text)
    await pilot.pause(0.4)  # the palette searches in the background
    await pilot.press("enter")


def test_inspector_search_page_steps_and_live(make_app, model_loaded, wait_until, sae_engine, monkeypatch):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            pane = app.query_one(InspectorPane)
            assert pane.path == sae_engine.down  # the default downstream SAE, from SAESCOPE_WEIGHTS

            # "densest" from the palette: the Inspector opens on a search screen.
            await palette(pilot, "densest")
            screen = app.screen
            assert isinstance(screen, FeatureSearchScreen) and screen.kind == "densest"
            await wait_until(pilot, lambda: screen.results is not None, 30, "the densest features")
            densities = [r.density for r in screen.results]
            assert all(r.description for r in screen.results)  # each hit with its description
            listed = str(screen.query_one(OptionList).get_option_at_index(0).prompt)
            assert screen.results[0].description in listed
            assert len(densities) == 20 and densities == sorted(densities, reverse=True)
            f = screen.results[0].feature
            await pilot.press("enter")
            await wait_until(pilot, lambda: pane.page_view.page is not None and pane.page_view.page.feature == f,
                             30, "the densest feature's page")
            assert app.query_one(TabbedContent).active == "inspector"
            page = pane.page_view.page
            assert head(pane).startswith(f"#{f} of {page.d_sae}") and f"density {densities[0]:.3%}" in head(pane)
            examples = pane.query_one("#page-examples", ExampleList)
            assert len(examples.examples) == 10
            lines = str(examples.render()).splitlines()
            assert len(lines) == 11 and all(len(line) <= 78 for line in lines)
            assert f"{page.examples[0].max:.2f}" in lines[1]
            assert "activation (log scale)" in str(pane.query_one("#page-hist").render())
            screen_text = app.export_screenshot()
            assert "boosts" in screen_text and "suppresses" in screen_text

            # Pages around it and its neighbours are fetched in the background...
            path = pane.path
            await wait_until(pilot, lambda: pane.pages.cached(path, f + 1) is not None, 30, "the next page")
            asked = len(pane.pages.fetched)
            # ...so stepping shows the next page at once, without asking the engine.
            await pilot.press("right")
            assert pane.current == (path, f + 1) and pane.page_view.page.feature == f + 1
            assert pane.pages.fetched.count((path, f + 1)) == 1 and len(pane.pages.fetched) >= asked
            neighbour = pane.page_view.page.neighbours[0].feature
            await wait_until(pilot, lambda: pane.pages.cached(path, neighbour) is not None, 30, "the neighbour")
            await pilot.press("1")
            assert pane.page_view.page.feature == neighbour
            await pilot.press("b", "b")
            assert pane.current == (path, f)

            # A typed number.
            await pilot.press("g")
            assert app.focused is pane.number_input
            await pilot.press("ctrl+u", *"7", "enter")
            await wait_until(pilot, lambda: pane.page_view.page.feature == 7, 30, "feature 7")

            # Live activations: type text, see the strongest features, open one.
            await pilot.press("v")
            live = pane.query_one(LiveView)
            assert app.focused is live.text_input
            await pilot.press(*"def f(x):")
            await wait_until(pilot, lambda: live.result is not None, 30, "live activations")
            assert live.result.tokens == ["def", " f", "(", "x", "):"]
            assert pane.query_one(TokenCursor).tokens == live.result.tokens
            strongest = live.result.strongest
            assert strongest and [s.max for s in strongest] == sorted((s.max for s in strongest), reverse=True)
            assert pane.query_one("#live-at", OptionList).option_count >= 1
            await pilot.press("enter")  # to the strongest list
            assert app.focused is pane.query_one("#live-strongest", OptionList)
            await pilot.press("enter")
            top = strongest[0].feature
            assert not pane.live_shown and pane.current == (path, top)
            await wait_until(pilot, lambda: pane.page_view.page.feature == top, 30, "the live feature's page")

            # "Go to feature N" from the palette.
            await palette(pilot, "12")
            await wait_until(pilot, lambda: pane.page_view.page.feature == 12, 30, "feature 12")

            # A feature out of range is refused with the reason, not clamped.
            d_sae = pane.page_view.page.d_sae
            await pilot.press("g", "ctrl+u", *"99999", "enter")
            status = pane.query_one("#inspect-status")
            assert status.has_class("-error") and f"out of range" in str(status.render())
            assert f"0..{d_sae - 1}" in str(status.render())
            assert pane.current == (path, 12) and pane.page_view.page.feature == 12

            # Opening another SAE that fails: the header goes back to the SAE shown.
            pane.show_feature(3, path="/nowhere/sae")
            await wait_until(pilot, lambda: status.has_class("-error") and "nowhere" in str(status.render()), 30,
                             "the failed open")
            assert pane.sae_field.path == path and pane.number_input.value == "12"
            assert pane.page_view.page.feature == 12

    asyncio.run(main())


def test_inspector_80x24(snap_compare, make_app, model_loaded, wait_until, sae_engine, monkeypatch):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))

    async def run_before(pilot) -> None:
        app = pilot.app
        await model_loaded(pilot)
        pane = app.query_one(InspectorPane)
        pane.number_input.value = "3"  # the first page shown
        app.action_show_pane("inspector")
        await wait_until(pilot, lambda: pane.page_view.page is not None and pane.page_view.page.feature == 3
                         and not app.jobs, 60, "feature 3, quiet")
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
