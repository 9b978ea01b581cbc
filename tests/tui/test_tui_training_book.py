"""The Training pane's headless parts: the run book (merging live events, resume,
replays), the form's parsing and folder plan, and plots that fit their size."""

from __future__ import annotations

import pytest
from rich.text import Text

import msgspec

from engine.protocol import DensityHistogram, RunEval, RunMetrics, RunRead, TrainRecord, TrainSettings
from tui.plots import Series, curves, density, density_time, formed, nice_ticks, thin
from tui.train_settings import FormError, form_default, parse_int, parse_settings, plan
from tui.training import RunBook, fmt


def step(i: int, **extra) -> TrainRecord:
    return msgspec.convert({"kind": "step", "step": i, "tokens": (i + 1) * 256, "loss": 100.0 - i,
                            "explained_variance": i / 10, "l0": 4.0, **extra}, TrainRecord)


def m(run: int, record: TrainRecord) -> RunMetrics:
    return RunMetrics(run, record)


def test_events_map_to_runs_by_position_and_resume_drops_what_the_checkpoint_lost():
    book = RunBook()
    job = book.start([{"hook": "h", "arch": "topk", "out": "a"}, {"hook": "h", "arch": "relu", "out": "b"}])
    assert [r.state for r in book.ordered()] == ["starting", "starting"]
    assert book.metrics(job, m(1, step(0))) is True
    assert book.metrics(job, m(1, step(1))) is False
    assert book.metrics(job, m(7, step(0))) is False  # out of range: ignored
    a, b = book.get("a"), book.get("b")
    assert (a.state, b.state, len(b.steps)) == ("starting", "running", 2)
    for i in range(2, 6):
        book.metrics(job, m(1, step(i)))
    book.ended(job, "stopped")
    assert b.resumable and book.resume_specs(b) == [{"out": "a"}, {"out": "b"}]
    again = book.start(book.resume_specs(b), resume=True)
    assert len(b.steps) == 6  # kept until the resumed run reports
    book.metrics(again, m(1, step(4)))  # the checkpoint was at step 4
    assert [r.step for r in b.steps] == [0, 1, 2, 3, 4]
    book.finished(again, [RunEval("a", l0=4.0), RunEval("b", l0=5.0)])
    assert b.final == RunEval("b", l0=5.0) and not b.resumable and book.busy(["a", "b"]) == []


def test_a_job_that_fails_before_reporting_leaves_no_rows_and_replays_start_over():
    book = RunBook()
    job = book.start([{"hook": "h", "out": "x"}])
    book.forget(job)
    assert len(book) == 0
    hist = {"edges": [0.0, 1.0], "counts": [1]}
    run = book.opened("x", RunRead(path="x", config=TrainSettings(hook="h", tokens=1024, batch_size=256),
                                   records=[step(0, density_histogram=hist), step(1), step(2)]))
    assert run.state == "stopped" and run.total_steps == 4
    assert run.histogram == DensityHistogram([0.0, 1.0], [1])
    assert run.series("loss") == ([256, 512, 768], [100.0, 99.0, 98.0])


def test_form_parsing_and_folder_plan():
    assert parse_int("tokens", "2M") == 2_000_000 and parse_int("tokens", "256k") == 256_000
    assert parse_int("d_sae", "2_048") == 2048
    with pytest.raises(FormError, match="d_sae: '1.5' is not a whole number"):
        parse_int("d_sae", "1.5")
    assert parse_settings({"d_sae": "32", "l1": "0.5", "seed": "", "model": " default "}) == \
        {"d_sae": 32, "l1": 0.5, "model": "default"}
    taken = {"runs/topk-b0-mlp_out-1"}.__contains__
    specs = plan({"hook": "blocks.0.hook_mlp_out"}, ["relu", "topk"], "", taken)
    assert [s["out"] for s in specs] == ["runs/relu-b0-mlp_out-2", "runs/topk-b0-mlp_out-2"]
    assert [s["out"] for s in plan({"hook": "h"}, ["topk"], "mine/", taken)] == ["mine"]
    assert [s["out"] for s in plan({"hook": "h"}, ["topk", "relu"], "mine", taken)] == ["mine/topk", "mine/relu"]
    with pytest.raises(FormError, match="architecture"):
        plan({"hook": "h"}, [], "", taken)


def test_formatting():
    assert [fmt(v) for v in (216.97, 4.0, 0.2345, -0.0773, 12345.6, 1e6, None)] == \
        ["217.0", "4.000", "0.234", "-0.077", "12346", "1.00e+06", "–"]
    assert fmt(0.25, "pct") == "25%" and fmt(3700, "rate") == "3.7k" and fmt(float("nan")) == "nan"


@pytest.mark.parametrize("size", [(80, 20), (38, 7), (20, 5), (10, 3)])
def test_plots_fit_their_size(size):
    w, h = size
    xs = [256 * i for i in range(1, 500)]
    text = curves([Series(xs, [100 / i for i in range(1, 500)], 39), Series(xs, [0.0] * 499, 208)], w, h,
                  "loss (log)", log_y=True)
    one = DensityHistogram([-8 + i / 4 for i in range(33)], [0] * 28 + [3, 9, 12, 8], 0)
    hist = density(one, w, h, "firing")
    over_time = density_time([(256 * i, one) for i in range(300)], w, h, "over training")
    emerged = formed([Series(xs, [i / 499 for i in range(499)], 39)], [(0.01, 39)], w, h, "features formed")
    for out in (text, hist, over_time, emerged, curves([], w, h, "nothing"), density_time([], w, h, "none")):
        lines = Text.from_ansi(out).plain.split("\n")
        assert len(lines) <= h and all(len(line) <= w for line in lines)


def test_ticks_and_thinning():
    assert nice_ticks(0, 10_240, 5, min_step=2000) == [0, 5000, 10000]
    assert nice_ticks(-0.0998, -0.0701, 4, min_step=0.02) == [-0.0998, -0.0701]  # the ends when nothing fits
    xs, ys = thin(list(range(1000)), list(range(1000)), 100)
    assert len(xs) <= 101 and xs[-1] == 999 and xs[0] == 0


def test_the_form_starts_with_the_engines_defaults():
    """Defaults live once: in the engine's `TrainSettings` (which `TrainConfig` is)."""
    from engine.train.config import TrainConfig

    cfg = TrainConfig(hook="h")
    assert form_default("d_sae") == str(cfg.d_sae) and form_default("k") == str(cfg.k)
    assert form_default("l1") == str(cfg.l1) and form_default("checkpoint_every") == str(cfg.checkpoint_every)
    assert parse_int("tokens", form_default("tokens")) == cfg.tokens
    assert form_default("context") == "" and form_default("snapshot_every") == ""  # 0: automatic


def test_density_over_time_rows_are_bins_densest_on_top_and_the_not_fired_row_last():
    edges = [-8 + i / 4 for i in range(33)]
    early = DensityHistogram(edges, [0] * 31 + [10], never_fired=54)  # the densest bin, most not fired
    late = DensityHistogram(edges, [10] + [0] * 31, never_fired=0)  # the rarest bin
    lines = Text.from_ansi(density_time([(256, early), (10_240, late)], 30, 19, "over training")).plain.split("\n")
    assert lines[0].strip() == "over training" and lines[1].startswith("   0 ")  # 16 rows: a bin a half row
    assert lines[1][5] in "▀▄" and lines[1][5 + 12] == " "  # early: dense; late: not there
    assert lines[16][5] == " " and lines[16][5 + 12] in "▀▄"  # the rarest bin: late only
    assert lines[17].startswith("none █") and lines[17][5 + 12] == "·"
    assert lines[18].split() == ["256", "10.2k"]


def test_emergence_answers_are_read_off_the_engines_points():
    from engine.protocol import Emergence, EmergencePoint
    from tui.training import emergence_series, formed_by

    points = [EmergencePoint(s, s * 256, f, f, 0.5, fired) for s, f, fired in
              ((0, 0.0, 0.0), (2, 0.25, 0.5), (4, 0.5, 0.75), (6, 0.9, 1.0))]
    em = Emergence(path="r", arch="topk", d_sae=4, reference="final", reference_step=6, method="hungarian",
                   threshold=0.9, points=points, baseline_matched=0.0, baseline_mean_cosine=0.1,
                   emergence_step=[], first_fired_step=[])
    assert formed_by(em) == 1024 and formed_by(em, 0.95) is None
    assert emergence_series(em) == ([0, 512, 1024, 1536], [0.0, 0.25, 0.5, 0.9])
    book = RunBook()
    job = book.start([{"hook": "h", "out": "r"}])
    run = job.runs[0]
    assert run.emergence_key is None and not run.emergence_due
    book.metrics(job, m(0, TrainRecord("snapshot", 1, tokens=512)))
    assert run.snapshot_step == 1 and run.emergence_due
    run.set_emergence(run.emergence_key, em)
    assert not run.emergence_due
    book.finished(job, [RunEval("r")])
    assert run.emergence_due  # now against the final decoder
