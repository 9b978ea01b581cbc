"""The app driven by Textual's pilot, always against a real engine subprocess:
predicting, vim movement, a job and its cancellation, pane keys, the palette, the engine dying
and coming back, help, and the log view."""

from __future__ import annotations

import asyncio
import os
import signal

from textual.widgets import TabbedContent

from tui.screens.help import HelpScreen
from tui.target import EngineTarget
from tui.widgets.engine_banner import EngineBanner
from tui.widgets.log_view import LogView
from tui.widgets.predict_pane import PredictPane
from tui.widgets.prompt_input import PromptInput
from tui.widgets.status_bar import StatusBar
from tui.widgets.token_chips import TokenChips
from tui.widgets.top_tokens import TopTokensTable


def status_text(app) -> str:
    return str(app.query_one(StatusBar).render())


def test_connects_loads_the_model_and_predicts(make_app, model_loaded, wait_until):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            status = status_text(app)
            assert "● connected · local" in status and "mini-gelu-1l · cpu" in status and "no jobs" in status

            pane = app.query_one(PredictPane)
            assert app.focused is app.query_one(PromptInput)
            await pilot.press(*"def f(", "enter")
            await wait_until(pilot, lambda: pane.result is not None, 30, "a prediction")
            tokens = pane.result.tokens
            assert tokens[-1] == "(" and len(pane.result.top) == 10
            chips = str(app.query_one(TokenChips).render())
            assert "def" in chips and "·f" in chips  # the space before f is shown
            table = app.query_one(TopTokensTable)
            assert table.row_count == 10
            probs = [row.prob for row in pane.result.top]
            assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
            first_row = table.get_row_at(0)
            assert str(first_row[3]) == f"{probs[0]:.2%}"

            # Escape leaves the prompt for the list, which moves vim-style.
            await pilot.press("escape")
            assert app.focused is table
            await pilot.press("j", "j", "k")
            assert table.cursor_row == 1
            await pilot.press("G")
            assert table.cursor_row == 9
            await pilot.press("g")
            assert table.cursor_row == 0

            # Enter on a token appends it to the prompt and predicts again.
            top = pane.result.top[0].token
            await pilot.press("enter")
            await wait_until(pilot, lambda: len(pane.result.tokens) > len(tokens), 30, "the next prediction")
            assert app.query_one(PromptInput).value == "def f(" + top

            await pilot.press("slash")
            assert app.focused is app.query_one(PromptInput)

    asyncio.run(main())


def test_test_job_shows_progress_and_cancels(make_app, model_loaded, wait_until):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            # the engine's sleep job (a debug job: not in the palette)
            app.run_worker(app.link.run("sleep", {"seconds": 60.0, "steps": 120}), exit_on_error=False)
            await wait_until(pilot, lambda: "job: sleep" in status_text(app), 10, "the job in the status bar")
            await wait_until(pilot, lambda: any(j.fraction for j in app.jobs), 10, "progress")
            assert "%" in status_text(app)
            # The app answers keys while the job runs.
            await pilot.press(*"abc")
            assert app.query_one(PromptInput).value == "abc"

            await pilot.press("ctrl+g")
            await wait_until(pilot, lambda: not app.jobs, 10, "the job to end")
            assert "no jobs" in status_text(app)
            assert app.link.finished[-1][1:] == ("sleep", "cancelled")

            # a job that fails shows as failed in the status bar, its message in the log
            app.run_worker(app.link.run("sleep", {"seconds": -1}), exit_on_error=False)
            await wait_until(pilot, lambda: "✗ sleep failed" in status_text(app), 10, "the failure in the status bar")
            assert app.link.finished[-1][1:] == ("sleep", "error")

    asyncio.run(main())


def test_engine_death_keeps_state_and_restart_reconnects(make_app, model_loaded, wait_until):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            pane = app.query_one(PredictPane)
            await pilot.press(*"The cat", "enter")
            await wait_until(pilot, lambda: pane.result is not None, 30, "a prediction")
            before = pane.result

            pid = app.link.engine_pid
            os.kill(pid, signal.SIGKILL)
            bar = app.query_one(StatusBar)
            await wait_until(pilot, lambda: bar.connection == "disconnected", 15, "the death to show")
            banner = app.query_one(EngineBanner)
            assert banner.display and "killed by SIGKILL" in str(banner.render())
            assert "engine died" in status_text(app)
            assert app.query_one(PromptInput).value == "The cat" and pane.result is before
            assert app.query_one(TopTokensTable).row_count == 10

            # Predicting now says why it cannot, and keeps the old results.
            await pilot.press("enter")
            info = app.query_one("#predict-info")
            await wait_until(pilot, lambda: info.has_class("-error"), 5, "an error line")
            assert "not running" in str(info.render()) and pane.result is before

            await pilot.press("ctrl+r")
            await wait_until(pilot, lambda: bar.connection == "connected", 30, "the restart")
            await model_loaded(pilot)
            assert app.link.engine_pid != pid
            assert not banner.display and "● connected" in status_text(app)
            await pilot.press("enter")
            await wait_until(pilot, lambda: pane.result is not before, 30, "a new prediction")
            assert pane.result.top == before.top  # same model, same prompt, same answer

    asyncio.run(main())


def test_help_and_log(make_app, wait_until):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            log = app.query_one(LogView)
            await wait_until(pilot, lambda: app.link.connected, 30, "the engine")
            pid = app.link.engine_pid
            await pilot.press("ctrl+r")  # a running engine is restarted only on a second press
            await pilot.pause(0.3)
            assert app.link.connected and app.link.engine_pid == pid

            prompt = app.query_one(PromptInput)
            await pilot.press(*"ab?")  # `?` is a character in the prompt; F1 is help while typing
            assert prompt.value == "ab?" and not isinstance(app.screen, HelpScreen)
            await pilot.press("f1")
            assert isinstance(app.screen, HelpScreen)
            shown = _help_text(app.screen)
            for pane in ("Predict", "Inspector", "Ablation", "Training", "Circuit", "Graph"):
                assert pane in shown  # a section per pane, and its key
            assert "F2" in shown and "F7" in shown and "Show the Ablation pane" in shown
            await pilot.press("escape")
            assert not isinstance(app.screen, HelpScreen)

            # a key per pane, also while typing; each puts focus into its pane
            tabs = app.query_one(TabbedContent)
            for key, pane in (("f4", "ablation"), ("f3", "inspector"), ("f5", "train"), ("f6", "circuit"),
                              ("f7", "graph"), ("f2", "predict")):
                await pilot.press(key)
                await pilot.pause(0.05)
                assert tabs.active == pane
                assert app.focused is not None and pane in [a.id for a in app.focused.ancestors_with_self]
            assert app.focused is prompt

            # the log toggle leaves focus where it was
            assert not log.display
            await pilot.press("ctrl+l")
            assert log.display and app.focused is prompt
            assert any("connected local" in str(line.text) for line in log.lines)
            await pilot.press("ctrl+l")
            assert not log.display and app.focused is prompt
            await pilot.press("ctrl+l")
            log.focus()  # the user went into the log (Tab, a click): hiding it returns focus
            await pilot.pause()
            await pilot.press("ctrl+l")
            assert not log.display and app.focused is prompt

    asyncio.run(main())


def _help_text(screen) -> str:
    from rich.console import Console

    console = Console(width=100, record=True, file=open(os.devnull, "w"))
    console.print(screen._table())
    return console.export_text()


def test_palette_lists_panes_and_pane_actions_and_no_debug_entries(make_app, wait_until):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await wait_until(pilot, lambda: app.link.connected, 30, "the engine")
            names = [name for name, _, _ in app.palette_commands()]
            assert not any("test job" in n.lower() for n in names)
            for title in ("Predict", "Inspector", "Ablation", "Training", "Circuit", "Graph"):
                assert f"Show pane: {title}" in names
            assert any(n.startswith("Ablation: Toggle ablation") for n in names)
            assert any(n.startswith("Circuit: Raise the threshold") for n in names)
            assert any(n.startswith("Inspector: Search") for n in names)
            await pilot.press("ctrl+p")
            await pilot.press(*"show pane abl")
            await pilot.pause(0.3)
            await pilot.press("enter")
            await wait_until(pilot, lambda: app.query_one(TabbedContent).active == "ablation", 5, "the Ablation pane")

    asyncio.run(main())


def test_attaches_to_a_listening_engine(make_app, model_loaded, wait_until, tcp_engine_with_model):
    async def main():
        app = make_app(EngineTarget.tcp(tcp_engine_with_model, token="s3cret"))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            assert f"● connected · tcp {tcp_engine_with_model}" in status_text(app)
            assert [m for _, m, _ in app.link.finished] == []  # the engine had the model: no reload
            pane = app.query_one(PredictPane)
            await pilot.press(*"Emma", "enter")
            await wait_until(pilot, lambda: pane.result is not None, 30, "a prediction")
            assert pane.result.tokens[-1] == "Emma"

    asyncio.run(main())
