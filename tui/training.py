"""The Training pane's book of runs: what each run has reported, merged from the
engine's `metrics` events, `train.start` replies and `train.read` replays, plus
the form's text turned into `train.start` runs.

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
- The form's defaults mirror `TrainConfig`'s (the app may not import it); an
  empty field is left out of the request, so the engine's own default applies.
- `version` counters (per run and for the book) move on every change, so views
  redraw only what changed, on a timer, never per event.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

ARCHITECTURES = ("relu", "jumprelu", "topk", "batchtopk")
DEFAULT_HOOK = "blocks.0.hook_mlp_out"
# What the form starts with: TrainConfig's defaults, as text.
FORM_DEFAULTS = {"d_sae": "2048", "k": "32", "l1": "5.0", "tokens": "2M", "seed": "0",
                 "batch_size": "4096", "checkpoint_every": "100", "eval_tokens": "65536"}
INT_FIELDS = ("d_sae", "k", "tokens", "seed", "batch_size", "checkpoint_every", "eval_tokens", "context")
FLOAT_FIELDS = ("l1",)
# 256-colour codes, readable on dark and light backgrounds; plots and tables share them.
PALETTE = (39, 208, 76, 170, 220, 203, 44, 141)
# Final evaluation columns of the comparison table: (key, heading).
FINAL_METRICS = (("explained_variance", "EV"), ("l0", "L0"), ("mse", "MSE"), ("dead_fraction", "dead"),
                 ("ce_loss_score", "CE score"), ("kl_div_score", "KL score"),
                 ("ce_loss_with_sae", "CE w/ SAE"))

RunState = Literal["starting", "running", "cancelling", "cancelled", "finished", "error"]


class FormError(ValueError):
    """A form value the app can reject before asking the engine; one line for a person."""


@dataclass(eq=False)
class Run:
    out: str
    config: dict
    colour: int
    state: RunState = "starting"
    steps: list[dict] = field(default_factory=list)
    evals: list[dict] = field(default_factory=list)
    histogram: dict | None = None
    final: dict | None = None
    error: str = ""
    shown: bool = True
    """Whether its curves are drawn."""
    job: Job | None = None
    """The latest `train.start` that trained it (None for a run reopened from its folder)."""
    version: int = 0
    _series: dict[str, tuple[list[float], list[float]]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return Path(self.out).name or self.out

    @property
    def arch(self) -> str:
        return str(self.config.get("arch", "topk"))

    @property
    def total_steps(self) -> int | None:
        tokens, batch = self.config.get("tokens"), self.config.get("batch_size")
        if not isinstance(tokens, int) or not isinstance(batch, int) or batch <= 0:
            return None
        return max(1, tokens // batch)

    @property
    def last(self) -> dict | None:
        return self.steps[-1] if self.steps else None

    @property
    def active(self) -> bool:
        return self.state in ("starting", "running", "cancelling")

    @property
    def resumable(self) -> bool:
        return self.state in ("cancelled", "error") and self.final is None and bool(self.config)

    def add(self, record: dict) -> None:
        kind = record.get("kind")
        step = record.get("step", 0)
        if kind == "step":
            if self.steps and self.steps[-1]["step"] >= step:  # a resume went back to its checkpoint
                self.steps = [r for r in self.steps if r["step"] < step]
                self.evals = [r for r in self.evals if r["step"] < step]
                self._series = {}
            self.steps.append(record)
            for key, (xs, ys) in self._series.items():
                _append_point(xs, ys, record, key)
            if "density_histogram" in record:
                self.histogram = record["density_histogram"]
        elif kind == "eval":
            self.evals = [r for r in self.evals if r["step"] < step] + [record]
        self.version += 1

    def replay(self, records: list[dict], final: dict | None) -> None:
        """Start over from a metrics file (`train.read`)."""
        self.steps, self.evals, self.histogram, self._series = [], [], None, {}
        for record in records:
            self.add(record)
        self.final = final
        self.state = "finished" if final is not None else "cancelled"
        self.error = ""
        self.version += 1

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(tokens, values) of one step-record field, for the curves; kept up to date
        as records arrive once asked for (a redraw never walks the whole history)."""
        cached = self._series.get(key)
        if cached is None:
            cached = self._series[key] = ([], [])
            for r in self.steps:
                _append_point(*cached, r, key)
        return cached


def _append_point(xs: list[float], ys: list[float], record: dict, key: str) -> None:
    v = record.get(key)
    if isinstance(v, (int, float)) and math.isfinite(v):
        xs.append(record["tokens"])
        ys.append(v)


@dataclass(eq=False)
class Job:
    """One `train.start` request: its runs, in the order the engine numbers them."""

    runs: list[Run]
    resume: bool = False
    request_id: str | None = None
    cancelling: bool = False
    """Paused by the user; the request is cancelled as soon as its id is known."""


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

    def _run(self, out: str, config: dict) -> Run:
        run = self.runs.get(out)
        if run is None:
            run = self.runs[out] = Run(out, dict(config), PALETTE[len(self.runs) % len(PALETTE)])
        else:
            run.config = dict(config)
        return run

    def busy(self, outs: list[str]) -> list[str]:
        """The folders among `outs` that a job in flight is writing."""
        return [o for o in outs if o in self.runs and self.runs[o].active]

    def start(self, runs: list[dict], resume: bool = False) -> Job:
        """A job for these `train.start` runs (each with its `out`), before it is sent."""
        job = Job([], resume)
        for spec in runs:
            config = {k: v for k, v in spec.items() if k != "out"}
            run = self._run(spec["out"], config)
            run.state, run.error, run.job = "starting", "", job
            if not resume:
                run.steps, run.evals, run.histogram, run.final = [], [], None, None
            job.runs.append(run)
            self.touch(run)
        return job

    def metrics(self, job: Job, data: dict) -> bool:
        """A `metrics` event of `job`: `{run, record}`; True when it is the run's first."""
        index, record = data.get("run"), data.get("record")
        if not isinstance(index, int) or not 0 <= index < len(job.runs) or not isinstance(record, dict):
            return False
        run = job.runs[index]
        first = run.state == "starting"
        if first:
            run.state = "running"
        run.add(record)
        self.touch()
        return first

    def finished(self, job: Job, results: list[dict]) -> None:
        for run, final in zip(job.runs, results):
            run.final, run.state = final, "finished"
            self.touch(run)

    def stopped(self, job: Job, state: RunState, error: str = "") -> None:
        """The job ended without results: cancelled, or an error (for all its runs)."""
        for run in job.runs:
            run.state, run.error = state, error
            self.touch(run)

    def forget(self, job: Job) -> None:
        """Drop the runs of a job that failed before reporting anything (bad settings)."""
        for run in job.runs:
            if not run.steps and run.final is None and self.runs.get(run.out) is run:
                del self.runs[run.out]
        self.touch()

    def opened(self, out: str, result: dict) -> Run:
        """A run folder read back with `train.read`: its config, records and final evaluation."""
        run = self._run(out, result.get("config") or {})
        run.job = None
        run.replay(result.get("records") or [], result.get("eval"))
        self.touch()
        return run

    def resume_specs(self, run: Run) -> list[dict]:
        """The runs to resume with `run`: those of its last job that did not finish, else itself."""
        group = run.job.runs if run.job is not None else [run]
        return [{**r.config, "out": r.out} for r in group if r.resumable]


# ---- the form -----------------------------------------------------------------------------
_SUFFIX = {"k": 1_000, "m": 1_000_000, "g": 1_000_000_000}


def parse_int(name: str, text: str) -> int:
    """`2048`, `2_000_000`, `256k`, `2M` -> int; FormError otherwise."""
    t = text.strip().lower().replace("_", "").replace(",", "")
    mult = 1
    if t and t[-1] in _SUFFIX:
        t, mult = t[:-1], _SUFFIX[t[-1]]
    try:
        value = float(t) * mult if mult != 1 else int(t)
    except ValueError:
        raise FormError(f"{name}: {text.strip()!r} is not a whole number") from None
    if value != int(value):
        raise FormError(f"{name}: {text.strip()!r} is not a whole number")
    return int(value)


def parse_float(name: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise FormError(f"{name}: {text.strip()!r} is not a number") from None
    if not math.isfinite(value):
        raise FormError(f"{name}: {text.strip()!r} is not a finite number")
    return value


def parse_settings(values: dict[str, str]) -> dict:
    """The form's text fields as `TrainConfig` values; empty fields are left out."""
    out: dict = {}
    for name, text in values.items():
        if not text.strip():
            continue
        if name in INT_FIELDS:
            out[name] = parse_int(name, text)
        elif name in FLOAT_FIELDS:
            out[name] = parse_float(name, text)
        else:
            out[name] = text.strip()
    return out


def hook_short(hook: str) -> str:
    """`blocks.0.hook_mlp_out` -> `b0-mlp_out`, for folder names."""
    m = re.fullmatch(r"blocks\.(\d+)\.hook_(.+)", hook)
    short = f"b{m.group(1)}-{m.group(2)}" if m else hook.replace("hook_", "")
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", short).strip("-.") or "hook"


def plan(settings: dict, archs: list[str], out: str, taken) -> list[dict]:
    """`train.start` runs for the form: one per architecture, side by side.

    `out` empty: `runs/<arch>-<hook>-<n>`, the first n free for every architecture
    (`taken(folder)` says whether a folder is in use). One architecture and an
    `out`: that folder; several: `out/<arch>`.
    """
    if not archs:
        raise FormError("pick at least one architecture")
    if not settings.get("hook"):
        raise FormError("hook: pick a hook point")
    if out.strip():
        base = out.strip().rstrip("/")
        folders = [base] if len(archs) == 1 else [f"{base}/{a}" for a in archs]
    else:
        short = hook_short(settings["hook"])
        n = 1
        while any(taken(f"runs/{a}-{short}-{n}") for a in archs):
            n += 1
        folders = [f"runs/{a}-{short}-{n}" for a in archs]
    return [{**settings, "arch": a, "out": f} for a, f in zip(archs, folders)]


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
