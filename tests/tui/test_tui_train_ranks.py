"""The Training form's `ranks` field (data-parallel processes on the engine's machine):
bad values refused in the form with a message and nothing sent (on a scripted link,
no engine), and a tiny TopK run on two ranks from the form against the real engine,
its curves live, the engine's job listed with `ranks == 2`.

Notes
- The bad-value test mounts the Training pane alone, at 80x24, on a stand-in link
  that records every request: a refused form sends none.
- The two-rank run is tiny (d_sae 64, k 8, 3072 tokens in batches of 256, 512 eval
  tokens) and writes under pytest's tmp_path. The engine launches it under torchrun
  (gloo); its curves come from rank 0, like a one-process run's.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace

from textual.app import App, ComposeResult
from textual.widgets import Input

from engine.protocol import TrainJobs
from tui.widgets.plot_view import PlotView
from tui.widgets.train_pane import TrainPane

TRAIN_TIMEOUT = 120.0
TINY = dict(d_sae="64", k="8", tokens=str(256 * 12), batch_size="256", eval_tokens="512")


class RecordingLink:
    """`EngineLink` as the pane uses it, without an engine: every request is recorded."""

    model_spec = "default"
    model = None

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []
        self.logs: list[str] = []
        self.client = SimpleNamespace(connected=True, call=self._call)

    def log(self, text: str) -> None:
        self.logs.append(text)

    async def run(self, method, params=None, *, needs_model=False, on_event=None, on_start=None):
        self.calls.append((method, params or {}))
        await asyncio.Event().wait()  # a start that never answers (the test only looks at what was sent)

    async def _call(self, method, params=None):
        self.calls.append((method, params or {}))
        raise AssertionError(f"unexpected {method}")


class PaneApp(App):
    def __init__(self, link: RecordingLink) -> None:
        super().__init__()
        self.link = link

    def compose(self) -> ComposeResult:
        yield TrainPane(self.link)


def test_bad_ranks_are_refused_in_the_form_and_nothing_is_sent(tmp_path):
    async def main():
        link = RecordingLink()
        app = PaneApp(link)
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(TrainPane)
            pane.action_show_view("form")
            await pilot.pause()
            form = pane.form
            ranks, batch = form.query_one("#f-ranks", Input), form.query_one("#f-batch_size", Input)
            assert ranks.value == "1"
            # Beside the batch it splits, on screen at 80 columns.
            assert ranks.region.y == batch.region.y and ranks.region.x > batch.region.x
            assert ranks.region.right <= 80 and ranks.region.width >= 4

            form.fill(archs=["topk"], out=str(tmp_path / "bad"), **TINY)
            info = pane.query_one("#train-info")
            for text, message in (("0", "ranks: '0' is not a whole number from 1 to 64"),
                                  ("abc", "ranks: 'abc' is not a whole number"),
                                  ("65", "ranks: '65' is not a whole number from 1 to 64"),
                                  ("1.5", "ranks: '1.5' is not a whole number"),
                                  ("3", "ranks: the batch size (256) must divide evenly over 3 ranks")):
                ranks.focus()
                await pilot.press("home", "ctrl+k", *text, "enter")  # typed like a person
                assert ranks.value == text
                assert pane.info == message and info.has_class("-error"), (text, pane.info)
                assert pane.view == "form" and len(pane.book) == 0
            assert link.calls == []

            # A good value goes out as `train.start`'s own `ranks`, not as a run setting.
            await pilot.press("home", "ctrl+k", "4", "enter")
            await pilot.pause()
            assert [m for m, _ in link.calls] == ["train.start"]
            params = link.calls[0][1]
            assert params["ranks"] == 4 and all("ranks" not in run for run in params["runs"])
            assert pane.info == "starting bad on 4 ranks…"
            pane.controller.close()

    asyncio.run(main())


def test_a_tiny_topk_run_on_two_ranks(make_app, model_loaded, wait_until, tmp_path):
    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            pane = app.query_one(TrainPane)
            app.action_train("new")
            await pilot.pause(0.05)
            folder = tmp_path / "two"
            pane.form.fill(archs=["topk"], out=str(folder), ranks="2", **TINY)
            pane.form.query_one("#f-d_sae").focus()
            await pilot.press("enter")
            run = pane.book.runs[str(folder)]
            assert run.job.ranks == 2 and pane.info == "starting two on 2 ranks…"

            loss_plot = app.query_one("#plot-loss", PlotView)
            await wait_until(pilot, lambda: len(run.steps) >= 3 or run.state in ("finished", "failed"),
                             TRAIN_TIMEOUT, "the two ranks' first steps")
            await wait_until(pilot, lambda: "┤" in loss_plot.drawn, 5, "a loss curve")
            await wait_until(pilot, lambda: run.state in ("finished", "failed"), TRAIN_TIMEOUT, "the run to end")
            assert run.state == "finished", (run.error, pane.info)
            assert pane.info.startswith("finished two on 2 ranks")

            # The engine's own account of the job, and rank 0's records.
            listing = await app.link.client.call("train.list")
            assert isinstance(listing, TrainJobs)
            job = next(j for j in listing.jobs if any(Path(r.path) == folder for r in j.runs))
            assert job.ranks == 2 and job.job == run.job.engine_job
            steps = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
            steps = [r for r in steps if r["kind"] == "step"]
            assert [r["step"] for r in steps] == list(range(12)) and steps[-1]["tokens"] == 256 * 12
            assert [r.step for r in run.steps][-1] == 11
            assert json.loads((folder / "saescope.json").read_text())["batch_size"] == 256  # the global batch

    asyncio.run(main())
