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


def test_a_relative_sae_path_is_the_users_folder_or_the_remote_engines(make_app, model_loaded, wait_until,
                                                                        sae_engine, monkeypatch, tmp_path):
    """Typed in the app's folder, a relative SAE path reaches an engine on this machine
    (started elsewhere) as an absolute one; for a remote engine the dialog says paths are
    the engine's and sends what was typed."""
    from textual.widgets import Input, Static

    from tui.screens.sae_path import SaePathScreen

    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))
    (tmp_path / "mine").symlink_to(sae_engine.down)
    monkeypatch.chdir(tmp_path)  # the app's folder; the engine was started in another

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            app.action_show_pane("inspector")
            pane = app.query_one(InspectorPane)
            await wait_until(pilot, lambda: pane.page_view.page is not None, 60, "the first page")
            await pilot.press("s")
            assert isinstance(app.screen, SaePathScreen) and not app.screen.query("#sae-remote")
            await pilot.press("ctrl+u", *"mine", "enter")
            await wait_until(pilot, lambda: pane.path == str(tmp_path / "mine"), 5, "the absolute path")
            await wait_until(pilot, lambda: pane.control.shown and pane.control.shown[0] == str(tmp_path / "mine"),
                             60, "a page of the SAE named by a relative path")

            picked: list = []
            app.push_screen(SaePathScreen("/srv/saes/a", engine="via ssh"), picked.append)
            await pilot.pause()
            note = str(app.screen.query_one("#sae-remote", Static).render())
            assert "Paths are the engine's (via ssh)" in note
            app.screen.query_one(Input).value = "saes/b"
            await pilot.press("enter")
            assert picked == ["saes/b"]  # as typed: the engine reads it from its own folder

    asyncio.run(main())


def test_sae_paths_resolve_only_for_an_engine_on_this_machine(tmp_path, monkeypatch):
    from tui.sae_paths import resolve_typed

    monkeypatch.chdir(tmp_path)
    assert resolve_typed(" saes/x ", True) == str(tmp_path / "saes" / "x")
    assert resolve_typed("saes/x", False) == "saes/x"
    assert resolve_typed("release:gpt2-small-res-jb/blocks.0.hook_resid_pre", True).startswith("release:")
    assert EngineTarget.local().on_this_machine and EngineTarget.tcp("127.0.0.1:9").on_this_machine
    assert not EngineTarget.tcp("gpu-box:9").on_this_machine
    assert not EngineTarget.command("ssh box saescope engine serve --stdio").on_this_machine
