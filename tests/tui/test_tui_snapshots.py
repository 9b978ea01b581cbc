"""Snapshots of the layout after a prediction, at 80x24 and 120x40.

Regenerate with `--snapshot-update` when the layout changes on purpose, or when
the default model's weights change (the predictions are on screen).
"""

from __future__ import annotations

from tui.widgets.predict_pane import PredictPane
from tui.widgets.prompt_input import PromptInput


def after_prediction(model_loaded, wait_until, prompt: str = "def f("):
    async def run_before(pilot) -> None:
        app = pilot.app
        await model_loaded(pilot)
        app.query_one(PromptInput).cursor_blink = False  # a blinking cursor is not deterministic
        await pilot.press(*prompt, "enter")
        pane = app.query_one(PredictPane)
        await wait_until(pilot, lambda: pane.result is not None and not app.jobs, 30, "a prediction")

    return run_before


def test_layout_80x24(snap_compare, make_app, model_loaded, wait_until):
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=after_prediction(model_loaded, wait_until))


def test_layout_120x40(snap_compare, make_app, model_loaded, wait_until):
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=after_prediction(model_loaded, wait_until))
