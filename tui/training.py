"""The Training pane's book of runs: what each run has reported, merged from the
engine's `metrics` events, `train.start` replies and `train.read` replays, and the
formatting of its figures. (The form's text becomes runs in `tui.train_settings`.)

No Textual here (and no science): every figure shown is a field of an engine
record; this module only keeps them, in order, and formats them.

Notes
- A run is keyed by its output folder as sent to the engine (a path on the
  engine's side); a folder is in the book once.
- Records are kept in full (the engine sends at most 10 step records a second
  per run, and every histogram); the plots thin them to what a terminal can show.
- Resume: the engine truncates its metrics file to the checkpoint and goes on
  from there, so a step record at or before the last one kept here drops the
  later ones, and the live history matches a later replay of the file.
- `total_steps` is `tokens // batch_size` (at least 1), as the engine counts
  steps; it only feeds the "step/total" column.
- `version` counters (per run and for the book) move on every change, so views
  redraw only what changed, on a timer, never per event.
- Feature emergence (`train.emergence`) is asked by the controller when a run's
  `emergence_key` moves: a newer decoder snapshot, or the run finished since
  (its reference turns from the latest snapshot to the final decoder). The answer
  is kept whole; the views read its points as they are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Literal, Optional

import msgspec

from engine.figures import tokens_formed
from engine.protocol import (DEFAULT_TRAIN_HOOK, TRAIN_ARCHITECTURES, DensityHistogram, Emergence, RunEval,
                             RunMetrics, RunRead, RunSummary, TrainJobInfo, TrainRecord, TrainSettings)

ARCHITECTURES = TRAIN_ARCHITECTURES
HOOK_FIELD = "hook"
OUT = "out"  # keys of the form's own `train.start` run dicts (requests, not results)
MODEL = "model"
DEFAULT_HOOK = DEFAULT_TRAIN_HOOK
# 256-colour codes, readable on dark and light backgrounds; plots and tables share them.
PALETTE = (39, 208, 76, 170, 220, 203, 44, 141)
# Final evaluation rows of the comparison table: (heading, value of a `RunEval`).
FINAL_METRICS: tuple[tuple[str, str, Callable[[RunEval], Optional[float]]], ...] = (
    ("explained_variance", "EV", lambda e: e.explained_variance), ("l0", "L0", lambda e: e.l0),
    ("mse", "MSE", lambda e: e.mse), ("dead_fraction", "dead", lambda e: e.dead_fraction),
    ("ce_loss_score", "CE score", lambda e: e.ce_loss_score), ("kl_div_score", "KL score", lambda e: e.kl_div_score),
    ("ce_loss_with_sae", "CE w/ SAE", lambda e: e.ce_loss_with_sae))

# What a run is doing, as the pane shows it. `stopped`: asked to stop (s, ctrl+g, the quit
# dialog), checkpointed, `s` resumes it exactly; the engine's run files say `stopped` too.
# `stopping`: asked, not stopped yet. `unfollowed`: it trains on in the engine, but this
# app no longer follows it (the connection ended). `failed`: the engine's error, in
# `Run.error`. Nothing is "paused" or "cancelled": only requests are cancelled.
RunState = Literal["starting", "running", "stopping", "stopped", "unfollowed", "finished", "failed"]
# A reopened folder's state (its `state.json`, `engine.protocol.TrainState`) as the pane says it.
_OPENED_STATE: dict[str, RunState] = {"finished": "finished", "stopped": "stopped", "failed": "failed",
                                      "starting": "unfollowed", "running": "unfollowed"}


def settings_of(spec: dict) -> TrainSettings:
    """A `train.start` run (settings plus `out`) as the engine's settings struct."""
    return msgspec.convert({k: v for k, v in spec.items() if k != OUT}, TrainSettings, strict=False)


@dataclass(eq=False)
class Run:
    out: str
    config: TrainSettings
    colour: int
    state: RunState = "starting"
    steps: list[TrainRecord] = field(default_factory=list)
    evals: list[TrainRecord] = field(default_factory=list)
    histogram: DensityHistogram | None = None
    histograms: list[TrainRecord] = field(default_factory=list)
    """The step records that carry a `density_histogram` (every 10 steps): firing density over time."""
    final: RunEval | None = None
    error: str = ""
    shown: bool = True
    """Whether its curves are drawn."""
    job: Job | None = None
    """The latest `train.start`/`train.follow` that trained it (None for a run reopened from its folder)."""
    engine_job: str = ""
    """The engine's id of the training process that trains (or trained) it."""
    version: int = 0
    snapshot_step: int | None = None
    """The step of the latest decoder snapshot recorded (None: none, e.g. trained with snapshot every -1)."""
    emergence: Emergence | None = None
    """The latest `train.emergence` answer."""
    emergence_error: str = ""
    """Why the latest `train.emergence` failed ('' when it did not)."""
    emergence_for: tuple | None = None
    """The `emergence_key` the latest answer (or error) was asked for."""
    generation: int = 0
    """Moves when the run's history starts over (a new start in its folder, a replay): an
    emergence request asked before is stale."""
    _series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return Path(self.out).name or self.out

    @property
    def arch(self) -> str:
        return self.config.arch

    @property
    def total_steps(self) -> int:
        return self.config.steps

    @property
    def last(self) -> TrainRecord | None:
        return self.steps[-1] if self.steps else None

    @property
    def active(self) -> bool:
        """Trained by a request of this app (started, followed), not ended yet."""
        return self.state in ("starting", "running", "stopping")

    @property
    def resumable(self) -> bool:
        return self.state in ("stopped", "failed") and self.final is None

    def add(self, record: TrainRecord) -> None:
        step = record.step
        if record.kind == "step":
            if self.steps and self.steps[-1].step >= step:  # a resume went back to its checkpoint
                self.steps = [r for r in self.steps if r.step < step]
                self.evals = [r for r in self.evals if r.step < step]
                self._series = {}
            self.steps.append(record)
            for key, (xs, ys) in self._series.items():
                _append_point(xs, ys, record, SERIES[key])
            if record.density_histogram is not None:
                self.histogram = record.density_histogram
                if self.histograms and self.histograms[-1].step >= step:
                    self.histograms = [r for r in self.histograms if r.step < step]
                self.histograms.append(record)
        elif record.kind == "eval":
            self.evals = [r for r in self.evals if r.step < step] + [record]
        elif record.kind == "snapshot":
            self.snapshot_step = step
        self.version += 1

    def replay(self, records: list[TrainRecord], final: RunEval | None) -> None:
        """Start over from a metrics file (`train.read`): finished with its evaluation,
        else stopped until the caller knows better (its `state.json`)."""
        self.steps, self.evals, self.histogram, self.histograms, self._series = [], [], None, [], {}
        self.snapshot_step, self.emergence_for = None, None  # asked again (a finished run's is cached)
        self.generation += 1
        for record in records:
            self.add(record)
        self.final = final
        self.state = "finished" if final is not None else "stopped"
        self.error = ""
        self.version += 1

    def clear(self) -> None:
        """Forget every record and answer: a new run in this folder."""
        self.steps, self.evals, self.histogram, self.histograms, self.final = [], [], None, [], None
        self.snapshot_step, self.emergence, self.emergence_error, self.emergence_for = None, None, "", None
        self._series = {}
        self.generation += 1

    @property
    def emergence_key(self) -> tuple | None:
        """What an emergence answer depends on: the latest snapshot, and whether the run has
        finished (its reference is then the final decoder). None: no snapshot to match."""
        return None if self.snapshot_step is None else (self.snapshot_step, self.final is not None)

    @property
    def emergence_due(self) -> bool:
        """`train.emergence` should be asked: the snapshots moved since the latest answer."""
        return self.emergence_key is not None and self.emergence_key != self.emergence_for

    def set_emergence(self, key: tuple | None, result: Emergence | None, error: str = "") -> None:
        """The answer to a `train.emergence` asked at `key` (an error keeps the last curve)."""
        self.emergence_for, self.emergence_error = key, error
        if result is not None:
            self.emergence = result
        self.version += 1

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(tokens, values) of one step-record field (a `SERIES` key), for the curves;
        kept up to date as records arrive once asked for (a redraw never walks the
        whole history)."""
        cached = self._series.get(key)
        if cached is None:
            cached = self._series[key] = ([], [])
            for r in self.steps:
                _append_point(*cached, r, SERIES[key])
        return cached


# The step-record values the curves draw, by name.
SERIES: dict[str, Callable[[TrainRecord], Optional[float]]] = {
    "loss": lambda r: r.loss, "explained_variance": lambda r: r.explained_variance, "l0": lambda r: r.l0,
    "dead_fraction_window": lambda r: r.dead_fraction_window, "mse": lambda r: r.mse}


def _append_point(xs: list[float], ys: list[float], record: TrainRecord,
                  value: Callable[[TrainRecord], Optional[float]]) -> None:
    v = value(record)
    if isinstance(v, (int, float)) and math.isfinite(v) and record.tokens is not None:
        xs.append(record.tokens)
        ys.append(v)


@dataclass(eq=False)
class Job:
    """One `train.start` (or `train.follow`) request: its runs, in the order the engine numbers them."""

    runs: list[Run]
    resume: bool = False
    request_id: str | None = None
    stopping: bool = False
    """Asked to stop (s, ctrl+g, the quit dialog): the engine checkpoints it and stops it."""
    engine_job: str = ""
    ranks: int = 1
    """Data-parallel processes training it on the engine's machine (`train.start`'s `ranks`)."""


class RunBook:
    """Every run the pane knows, in the order they appeared."""

    def __init__(self) -> None:
        self.runs: dict[str, Run] = {}
        self.version = 0

    def __len__(self) -> int:
        return len(self.runs)

    def ordered(self) -> list[Run]:
        return list(self.runs.values())

    def get(self, out: str) -> Run | None:
        return self.runs.get(out)

    def touch(self, run: Run | None = None) -> None:
        if run is not None:
            run.version += 1
        self.version += 1

    def _run(self, out: str, config: TrainSettings) -> Run:
        run = self.runs.get(out)
        if run is None:
            run = self.runs[out] = Run(out, config, PALETTE[len(self.runs) % len(PALETTE)])
        else:
            run.config = config
        return run

    def busy(self, outs: list[str]) -> list[str]:
        """The folders among `outs` that a job in flight is writing."""
        return [o for o in outs if o in self.runs and self.runs[o].active]

    def active_jobs(self) -> list[Job]:
        """The jobs with a run still training (each once)."""
        out: list[Job] = []
        for run in self.runs.values():
            if run.active and run.job is not None and run.job not in out:
                out.append(run.job)
        return out

    def start(self, runs: list[dict], resume: bool = False, ranks: int = 1) -> Job:
        """A job for these `train.start` runs (each with its `out`), before it is sent."""
        job = Job([], resume, ranks=ranks)
        for spec in runs:
            known = self.runs.get(spec[OUT])
            run = self._run(spec[OUT], known.config if known is not None and HOOK_FIELD not in spec
                            else settings_of(spec))
            run.state, run.error, run.job = "starting", "", job
            if not resume:
                run.clear()
            job.runs.append(run)
            self.touch(run)
        return job

    def metrics(self, job: Job, data: RunMetrics) -> bool:
        """A `metrics` event of `job`; True when it is the run's first."""
        if not 0 <= data.run < len(job.runs):
            return False
        run = job.runs[data.run]
        first = run.state == "starting"
        if first:
            run.state = "running"
        run.add(data.record)
        self.touch()
        return first

    def finished(self, job: Job, results: list[RunEval]) -> None:
        for run, final in zip(job.runs, results):
            run.final, run.state = final, "finished"
            self.touch(run)

    def ended(self, job: Job, state: RunState, error: str = "") -> None:
        """The job ended without results: stopped, failed, or no longer followed (all its runs)."""
        for run in job.runs:
            run.state, run.error = state, error
            self.touch(run)

    def forget(self, job: Job) -> None:
        """Drop the runs of a job that failed before reporting anything (bad settings)."""
        for run in job.runs:
            if not run.steps and run.final is None and self.runs.get(run.out) is run:
                del self.runs[run.out]
        self.touch()

    def opened(self, out: str, result: RunRead) -> Run:
        """A run folder read back with `train.read`: its config, records and final evaluation."""
        run = self._run(out, result.config)
        run.job = None
        run.replay(result.records, result.eval)
        if result.state is not None and result.eval is None:
            run.state = _OPENED_STATE[result.state.state]
            run.error = result.state.message if run.state == "failed" else ""
        self.touch()
        return run

    def show_only(self, outs: list[str]) -> None:
        """Draw the curves of these runs and hide the others' (a reopened comparison)."""
        for run in self.runs.values():
            if run.shown != (run.out in outs):
                run.shown = run.out in outs
                self.touch(run)

    def key_of(self, summary: RunSummary) -> str:
        """The book's key for a run the engine lists: the folder as this app named it, if known."""
        return summary.out if summary.out in self.runs else summary.path

    def followed(self, info: TrainJobInfo) -> Job:
        """A job the engine is training (found by `train.list`), about to be followed."""
        job = Job([], info.resume, engine_job=info.job, ranks=info.ranks)
        for summary in info.runs:
            run = self._run(self.key_of(summary), summary.config)
            run.state, run.error, run.job, run.engine_job = "starting", "", job, info.job
            job.runs.append(run)
            self.touch(run)
        return job

    def resume_specs(self, run: Run) -> list[dict]:
        """The runs to resume with `run`: those of its last job that did not finish, else
        itself. Only their folders: the engine resumes each with its saved settings."""
        group = run.job.runs if run.job is not None else [run]
        return [{OUT: r.out} for r in group if r.resumable]


# ---- feature emergence --------------------------------------------------------------------
def formed_by(em: Emergence, fraction: float = 0.5) -> int | None:
    """Training tokens by which `fraction` of the features had formed (`engine.figures`)."""
    return tokens_formed(em.points, fraction)


def emergence_series(em: Emergence | None) -> tuple[list[float], list[float]]:
    """(tokens, fraction formed) of the engine's emergence points."""
    if em is None:
        return [], []
    return [p.tokens for p in em.points], [p.formed for p in em.points]


# ---- formatting ---------------------------------------------------------------------------
def fmt(value, kind: str = "num") -> str:
    """A metric for a table cell: `num` (4 significant digits), `pct`, `rate`, `int`."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return "–"
    if not math.isfinite(value):
        return "nan" if math.isnan(value) else ("∞" if value > 0 else "-∞")
    if kind == "pct":
        return f"{value:.0%}" if value == 0 or abs(value) >= 0.01 else f"{value:.1%}"
    if kind == "int":
        return f"{value:,.0f}"
    if kind == "rate":
        return f"{value / 1000:.1f}k" if value >= 1000 else f"{value:.0f}"
    a = abs(value)
    if a != 0 and (a >= 1e5 or a < 1e-3):
        return f"{value:.2e}"
    if a >= 1000:
        return f"{value:.0f}"
    return f"{value:#.4g}".rstrip(".") if a >= 1 else f"{value:.3f}"


def tokens_label(n: float) -> str:
    """`0`, `512`, `256k`, `2M`: axis ticks and the form."""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= div:
            v = n / div
            return f"{v:.0f}{suffix}" if v == int(v) or v >= 100 else f"{v:.3g}{suffix}"
    return f"{n:.0f}"
