"""The Training pane driven by Textual's pilot against a real engine subprocess: bad
values, tiny runs started from the form (two side by side, and a second job at
once), live table and curves, keys answering while runs train, final metrics in
the comparison, replaying a finished folder, a start into a folder that holds a
run (the whole error, wrapped, and the table keeps its rows), the folder of
side-by-side runs reopened as one comparison, feature emergence growing live as
decoder snapshots arrive (then the compare view's emergence rows, the density over
time and the feature map of a finished run), and stopping and resuming a run.

Notes
- One app (one engine, one model load) goes through every step, each a function
  below; starting the engine and loading the model is most of the cost.
- Runs are tiny (d_sae 32, k 4, 2048 tokens in batches of 256, 512 eval tokens)
  and write under pytest's tmp_path, never into the repository's `runs/`.
- Expected values come from the engine's own files (`metrics.jsonl`, `eval.json`,
  `checkpoint/position.json`, `emergence.json`), read here independently of the app.
- `SAESCOPE_TEST_STEP_DELAY` names a file with the seconds each training step
  waits (0 but while the emergence step watches its curve grow), read by the
  training processes the engine starts.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import msgspec
from rich.text import Text

from engine.protocol import DensityHistogram, Emergence, RunEval
from tui.screens.feature_map import FeatureMapScreen
from tui.training import FINAL_METRICS, fmt, tokens_label
from tui.widgets.compare_table import CompareTable, dead_cell
from tui.widgets.plot_view import PlotView
from tui.widgets.runs_table import RunsTable
from tui.widgets.train_form import TrainForm
from tui.widgets.train_pane import TrainPane
from tui.widgets.view_bar import ViewBar

TRAIN_TIMEOUT = 120.0
TINY = dict(d_sae="32", k="4", tokens=str(256 * 8), batch_size="256", eval_tokens="512")


def records(folder: Path, kind: str = "step") -> list[dict]:
    """The run's metrics lines of one kind (step, eval, snapshot)."""
    lines = (json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines())
    return [r for r in lines if r["kind"] == kind]


def cell(table, row_key: str, column_key: str) -> str:
    return str(table.get_cell(row_key, column_key)).strip()


async def open_form(pilot, pane: TrainPane) -> TrainForm:
    pilot.app.action_train("new")
    await pilot.pause(0.05)
    assert pane.view == "form"
    return pane.form


async def submit(pilot, form: TrainForm) -> None:
    form.query_one("#f-d_sae").focus()
    await pilot.press("enter")


def test_training_pane(make_app, model_loaded, wait_until, tmp_path, monkeypatch):
    delay = tmp_path / "step-delay"
    delay.write_text("0")
    monkeypatch.setenv("SAESCOPE_TEST_STEP_DELAY", str(delay))
    pca_map(monkeypatch)

    async def main():
        app = make_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            await bad_values(pilot, wait_until, tmp_path)
            await side_by_side_compare_and_replay(pilot, wait_until, tmp_path)
            await taken_folders_and_reopened_comparison(pilot, wait_until, tmp_path)
            await emergence_compare_and_map(pilot, wait_until, tmp_path, delay)
            await stop_and_resume(pilot, wait_until, tmp_path)
            await quit_asks_and_leaves_training_running(pilot, wait_until, tmp_path)
        # The app has quit; the run it left running goes on, in its own process.
        from engine.train import detached

        state = json.loads((tmp_path / "long" / "state.json").read_text())
        assert state["state"] == "running" and detached.pid_alive(state["pid"])
        time.sleep(1.0)
        assert detached.pid_alive(state["pid"])
        detached.stop(state["job"])

    asyncio.run(main())


async def quit_asks_and_leaves_training_running(pilot, wait_until, tmp_path) -> None:
    """ctrl+q while a run trains asks: esc stays, l leaves it running and quits."""
    from tui.screens.quit_training import QuitTrainingScreen

    app = pilot.app
    pane = app.query_one(TrainPane)
    run = pane.book.runs[str(tmp_path / "long")]
    await pilot.press("s")  # resume it once more
    state = tmp_path / "long" / "state.json"
    await wait_until(pilot, lambda: run.state == "running" and json.loads(state.read_text())["state"] == "running",
                     TRAIN_TIMEOUT, "the resumed run's process")  # (the first events replay the file)
    await pilot.press("ctrl+q")
    await wait_until(pilot, lambda: isinstance(app.screen, QuitTrainingScreen), 5, "the quit question")
    assert "long is training" in str(app.screen.query_one("#quit-question").render())
    await pilot.press("escape")
    await wait_until(pilot, lambda: not isinstance(app.screen, QuitTrainingScreen), 5, "staying")
    assert app.is_running and run.state == "running"
    await pilot.press("ctrl+q")
    await wait_until(pilot, lambda: isinstance(app.screen, QuitTrainingScreen), 5, "the quit question")
    await pilot.press("l")
    for _ in range(150):  # the app closes its connection, then exits
        if not app.link.connected:
            break
        await asyncio.sleep(0.1)
    assert not app.link.connected


async def bad_values(pilot, wait_until, tmp_path) -> None:
    pane = pilot.app.query_one(TrainPane)
    info = pane.query_one("#train-info")
    form = await open_form(pilot, pane)
    form.fill(archs=["topk"], out=str(tmp_path / "bad"), **{**TINY, "d_sae": "abc"})
    await submit(pilot, form)
    assert pane.info == "d_sae: 'abc' is not a whole number" and info.has_class("-error")
    assert len(pane.book) == 0 and pane.view == "form"
    form.fill(archs=[], d_sae="32")
    await submit(pilot, form)
    assert pane.info == "pick at least one architecture"

    # The engine's one-line error, and no row left behind.
    form.fill(archs=["topk"], **{**TINY, "k": "64"})
    await submit(pilot, form)
    await wait_until(pilot, lambda: info.has_class("-error"), 30, "the engine's error")
    assert pane.info == "--k must be between 1 and d_sae (32), got 64"
    assert len(pane.book) == 0


async def side_by_side_compare_and_replay(pilot, wait_until, tmp_path) -> None:
    app = pilot.app
    pane = app.query_one(TrainPane)
    table = app.query_one(RunsTable)

    # Typed like a person: each field starts selected, so typing replaces it.
    form = await open_form(pilot, pane)
    assert app.focused is form.query_one("#f-d_sae")
    await pilot.press("3", "2", "tab", "4")
    rest = {k: v for k, v in TINY.items() if k not in ("d_sae", "k")}
    form.fill(archs=["topk", "relu"], out=str(tmp_path / "pair"), **rest)
    await submit(pilot, form)
    assert pane.view == "curves" and app.focused is table
    # A second job at once, while the first one is starting.
    form = await open_form(pilot, pane)
    form.fill(archs=["batchtopk"], out=str(tmp_path / "solo"), context="64", **TINY)
    await submit(pilot, form)
    outs = [str(tmp_path / "pair" / "relu"), str(tmp_path / "pair" / "topk"), str(tmp_path / "solo")]
    assert [r.out for r in pane.book.ordered()] == outs, (pane.info, list(app.link.finished))

    await wait_until(pilot, lambda: any(r.state == "running" for r in pane.book.ordered()),
                     TRAIN_TIMEOUT, "the first metrics")
    assert len({r.job.request_id for r in pane.book.ordered()}) == 2  # two jobs, one shared by two runs
    solo_cfg = tmp_path / "solo" / "saescope.json"  # the form's context reached the engine's run
    await wait_until(pilot, solo_cfg.exists, TRAIN_TIMEOUT, "the solo run's settings")
    assert json.loads(solo_cfg.read_text())["context"] == 64
    pair_cfg = tmp_path / "pair" / "topk" / "saescope.json"  # the other job's process: its own pace
    await wait_until(pilot, pair_cfg.exists, TRAIN_TIMEOUT, "the pair's settings")
    assert json.loads(pair_cfg.read_text())["context"] == 0  # empty: auto
    loss_plot = app.query_one("#plot-loss", PlotView)
    await wait_until(pilot, lambda: "┤" in loss_plot.drawn, 5, "a loss curve")
    assert "loss (log)" in loss_plot.drawn

    # Keys answer at once while the runs train.
    table.focus()
    await pilot.pause(0.05)
    for key, check in (("g", lambda: table.cursor_row == 0), ("j", lambda: table.cursor_row == 1),
                       ("j", lambda: table.cursor_row == 2), ("k", lambda: table.cursor_row == 1),
                       ("f", lambda: pane.view == "firing"), ("m", lambda: pane.view == "compare"),
                       ("c", lambda: pane.view == "curves")):
        t0 = time.monotonic()
        await pilot.press(key)
        await wait_until(pilot, check, 1.0, f"the app to answer {key!r}")
        assert time.monotonic() - t0 < 1.0, key
    assert app.query_one(ViewBar).current == "curves"

    await wait_until(pilot, lambda: all(r.state == "finished" for r in pane.book.ordered()),
                     TRAIN_TIMEOUT, "every run to finish")
    await pilot.pause(0.3)  # a redraw tick
    for out in outs:
        folder = Path(out)
        saved = json.loads((folder / "saescope.json").read_text())
        assert (saved["d_sae"], saved["k"], saved["batch_size"], saved["eval_tokens"]) == (32, 4, 256, 512)
        last = records(folder)[-1]
        assert last["step"] == 7 and cell(table, out, "step") == "8/8"
        assert cell(table, out, "loss") == fmt(last["loss"])  # the last record is always sent
        assert cell(table, out, "state") == "finished"

    await pilot.press("m")
    compare = app.query_one(CompareTable)
    await wait_until(pilot, lambda: len(compare.columns) == 4, 2, "the comparison")
    for out in outs:
        final = json.loads((Path(out) / "eval.json").read_text())
        typed = msgspec.convert(final, RunEval)
        for key, _, _ in FINAL_METRICS:
            want = dead_cell(typed) if key == "dead_fraction" else fmt(final[key], "num")
            assert cell(compare, key, out) == want, key
    assert cell(compare, "arch", outs[0]) == "relu" and cell(compare, "sparsity", outs[1]) == "k 4"

    # Reopening a finished folder replays its metrics file into the table and plots.
    await pilot.press("c")
    topk = outs[1]
    pane.book.runs[topk].steps = []  # forget what the live events brought
    await pilot.press("o")
    app.screen.query_one("#open-path").value = topk
    await pilot.press("enter")
    replayed = pane.book.runs[topk]
    await wait_until(pilot, lambda: len(replayed.steps) == 8, 10, "the replay")
    await pilot.pause(0.3)
    recs = records(Path(topk))
    assert [r.step for r in replayed.steps] == [r["step"] for r in recs]
    last = recs[-1]
    assert cell(table, topk, "step") == "8/8"
    for column, key in (("loss", "loss"), ("ev", "explained_variance"), ("l0", "l0")):
        assert cell(table, topk, column) == fmt(last[key])
    assert cell(table, topk, "quiet") == fmt(last["dead_fraction_window"], "pct")
    assert replayed.histogram == msgspec.convert(last["density_histogram"], DensityHistogram)
    assert replayed.final == msgspec.convert(json.loads((Path(topk) / "eval.json").read_text()), RunEval)
    assert "opened topk" in pane.info


async def taken_folders_and_reopened_comparison(pilot, wait_until, tmp_path) -> None:
    app = pilot.app
    pane = app.query_one(TrainPane)
    table = app.query_one(RunsTable)
    info = pane.query_one("#train-info")
    rows = [r.out for r in pane.book.ordered()]
    pair = tmp_path / "pair"

    # A folder in the table: refused by the app, the row as it was.
    form = await open_form(pilot, pane)
    form.fill(archs=["topk"], out=str(pair / "topk"), **TINY)
    await submit(pilot, form)
    assert pane.info == (f"{pair / 'topk'} already holds a run (in the table, finished): "
                         "choose another out folder")
    assert [r.out for r in pane.book.ordered()] == rows and table.row_count == len(rows)

    # A folder the app does not know that holds a run: the engine's whole sentence,
    # wrapped over the lines it needs; the table keeps every row.
    elsewhere = tmp_path / "a-folder-with-a-rather-long-name-that-already-holds-a-run"
    elsewhere.mkdir()
    (elsewhere / "saescope.json").write_text((pair / "topk" / "saescope.json").read_text())
    form.fill(archs=["topk"], out=str(elsewhere), **TINY)
    await submit(pilot, form)
    want = f"{elsewhere} already holds a run: resume it, or choose another folder"
    await wait_until(pilot, lambda: pane.info == want, 30, "the engine's error")
    await pilot.pause(0.3)  # a redraw tick
    lines = Text(want).wrap(app.console, info.content_size.width)  # as the line wraps it
    assert info.has_class("-error") and info.content_size.height == len(lines) >= 2
    assert str(info.render()) == want
    assert [r.out for r in pane.book.ordered()] == rows and table.row_count == len(rows)

    # The parent folder of side-by-side runs: both, as one comparison.
    await pilot.press("c")
    await pilot.press("o")
    app.screen.query_one("#open-path").value = str(pair) + "/"
    await pilot.press("enter")
    await wait_until(pilot, lambda: pane.view == "compare" and pane.info.startswith(f"opened {pair}: 2 "), 10,
                     "the comparison")
    await pilot.pause(0.3)
    compare = app.query_one(CompareTable)
    shown = [str(pair / "relu"), str(pair / "topk")]
    assert [r.out for r in pane.book.ordered() if r.shown] == shown
    assert [str(c.value) for c in compare.columns][1:] == shown
    assert pane.info == f"opened {pair}: 2 side-by-side runs (2 finished) · c curves · space shows others"
    assert table.selected == shown[0]
    await pilot.press("G")  # solo, hidden: space shows it again
    await pilot.press("space")
    await wait_until(pilot, lambda: len(compare.columns) == 4, 2, "solo back in the comparison")
    await pilot.press("c")


opened_maps: list[str] = []


def pca_map(monkeypatch) -> None:
    """The map key opens the real map screen, by PCA: UMAP's first call compiles for
    half a minute on a busy box (the key itself asks for `auto`)."""
    import tui.widgets.train_pane as train_pane
    from tui.screens import feature_map

    def open_pca(app, path):
        opened_maps.append(path)
        return feature_map.open_feature_map(app, path, method="pca", clusters=4)

    monkeypatch.setattr(train_pane, "open_feature_map", open_pca)


async def emergence_compare_and_map(pilot, wait_until, tmp_path, delay: Path) -> None:
    """Two runs with a snapshot every 2 steps: the emergence view grows while they train
    (slowed down until it has); finished, it is matched to the final decoder and equals
    the engine's `emergence.json`; the compare view's emergence rows; the firing view's
    density over time; `p` on a training run says no, on a finished one opens its map."""
    app = pilot.app
    pane = app.query_one(TrainPane)
    folder = tmp_path / "emerge"
    outs = [str(folder / "relu"), str(folder / "topk")]  # the form's order
    delay.write_text("0.2")
    form = await open_form(pilot, pane)
    form.fill(archs=["topk", "relu"], out=str(folder), snapshot_every="2", **{**TINY, "tokens": str(256 * 16)})
    await submit(pilot, form)
    relu, topk = (pane.book.runs[o] for o in outs)
    assert pane.runs_table.selected == outs[0] and relu.state == "starting"
    await pilot.press("p")  # not finished: a notification, no map
    assert not isinstance(app.screen, FeatureMapScreen)
    assert "needs a finished run" in [n.message for n in app._notifications][-1]

    await pilot.press("e")
    plot = app.query_one("#emergence-plot", PlotView)
    await wait_until(pilot, lambda: topk.emergence is not None, TRAIN_TIMEOUT, "a first emergence answer")
    first = len(topk.emergence.points)
    assert topk.emergence.reference == "latest" and topk.state == "running"
    await wait_until(pilot, lambda: len(topk.emergence.points) > first and "┤" in plot.drawn, TRAIN_TIMEOUT,
                     "the curve to grow with the next snapshots")
    assert "features formed" in plot.drawn and "100%" in plot.drawn
    assert "to the latest snapshot until finished" in str(app.query_one("#emergence-note").render())
    delay.write_text("0")
    await wait_until(pilot, lambda: all(r.state == "finished" and r.emergence is not None
                                        and r.emergence.reference == "final" for r in (topk, relu)),
                     TRAIN_TIMEOUT, "both runs finished and matched to their final decoders")
    cached = {o: json.loads((Path(o) / "emergence.json").read_text()) for o in outs}
    for out, run in zip(outs, (relu, topk)):
        assert run.emergence == msgspec.convert(cached[out], Emergence)
        assert len(run.emergence.points) == len(list((Path(out) / "snapshots").iterdir())) == 9
    await pilot.pause(0.3)  # a redraw tick
    assert "to the final decoder" in plot.drawn and not app.query_one("#emergence-note").display

    await pilot.press("m")
    compare = app.query_one(CompareTable)
    await wait_until(pilot, lambda: outs[0] in [str(c.value) for c in compare.columns], 2, "the comparison")
    for out in outs:
        points = cached[out]["points"]
        half = next((p["tokens"] for p in points if p["formed"] >= 0.5), None)
        assert cell(compare, "formed_half", out) == ("–" if half is None else tokens_label(half))
        assert cell(compare, "fired", out) == fmt(points[-1]["fired"], "pct")

    await pilot.press("f")
    await pilot.pause(0.3)
    over_time = app.query_one("#firing-time", PlotView).drawn
    assert "none" in over_time and any(ch in over_time for ch in "▀▄")

    await pilot.press("p")  # finished: its feature map
    await wait_until(pilot, lambda: isinstance(app.screen, FeatureMapScreen) and app.screen.fmap is not None, 60,
                     "the finished run's map")
    assert opened_maps[-1] == outs[0] and app.screen.fmap.d_sae == 32 and app.screen.fmap.clusters
    await pilot.press("escape")
    await pilot.press("c")  # no view shows emergence: nothing asked, nothing in flight
    assert not pane.controller.emerging


async def stop_and_resume(pilot, wait_until, tmp_path) -> None:
    app = pilot.app
    pane = app.query_one(TrainPane)
    folder = tmp_path / "long"
    form = await open_form(pilot, pane)
    form.fill(archs=["topk"], out=str(folder), **{**TINY, "tokens": str(256 * 2000)})
    await submit(pilot, form)
    run = pane.book.runs[str(folder)]
    await wait_until(pilot, lambda: len(run.steps) >= 3, TRAIN_TIMEOUT, "a few steps")
    await pilot.press("s")  # the long run was selected when it started
    assert run.state in ("stopping", "stopped")  # the engine may answer at once
    await wait_until(pilot, lambda: run.state == "stopped", 30, "the stop")
    assert pane.info == "stopped long (checkpointed): s resumes"
    await pilot.pause(0.3)  # a redraw tick
    assert cell(app.query_one(RunsTable), str(folder), "state") == "stopped"
    checkpoint = json.loads((folder / "checkpoint" / "position.json").read_text())["step"]
    assert checkpoint >= 3 and not (folder / "eval.json").exists()
    assert app.link.finished[-1][1:] == ("train.start", "cancelled")

    await pilot.press("s")
    await wait_until(pilot, lambda: run.state == "running" and run.last.step >= checkpoint + 2,
                     TRAIN_TIMEOUT, "the resumed run's steps")
    steps = [r.step for r in run.steps]
    assert steps == sorted(set(steps))  # nothing twice, whatever the stop cut off
    on_disk = [r["step"] for r in records(folder)]
    assert on_disk[: checkpoint + 2] == list(range(checkpoint + 2))  # continued from the checkpoint
    assert run.job.resume and run.job.request_id != app.link.finished[-1][0]

    await pilot.press("s")
    await wait_until(pilot, lambda: run.state == "stopped", 30, "the second stop")
