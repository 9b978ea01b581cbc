"""The Training form's text as `train.start` runs: each field parsed (`2M`, `256k`,
`2_048`), the folders named, and what each field starts with.

No Textual here: the form (`tui.widgets.train_form`) posts its raw text and the
controller (`tui.controllers.training`) turns it into runs with `plan`.

Notes
- The form's fields, types and defaults come from `engine.protocol.TrainSettings`,
  which the engine's `TrainConfig` is built on; an empty field is left out of the
  request, so the engine's own default applies.
- `ranks` is no run setting but `train.start`'s own (`TrainStartParams.ranks`): how
  many data-parallel processes train the job on the engine's machine. The batch
  size is the global batch, split over them, so it must divide evenly; a resume
  may use another count (the run's config does not depend on it).
"""

from __future__ import annotations

import math
import re

import msgspec

from engine.protocol import TRAIN_MAX_RANKS, TrainSettings, TrainStartParams
from tui.training import HOOK_FIELD, tokens_label

# The form's numeric fields and their types come from the engine's `TrainSettings`.
_FIELDS = {f.name: f for f in msgspec.structs.fields(TrainSettings)}
INT_FIELDS = tuple(n for n, f in _FIELDS.items() if f.type is int)
FLOAT_FIELDS = tuple(n for n, f in _FIELDS.items() if f.type is float)
AUTOMATIC_ZERO = ("context", "snapshot_every")  # 0 means "the engine chooses": shown empty
BATCH_FIELD = "batch_size"
RANKS_FIELD = "ranks"  # `train.start`'s, not a run's: the data-parallel processes of the job
DEFAULT_RANKS = next(f.default for f in msgspec.structs.fields(TrainStartParams) if f.name == RANKS_FIELD)
MAX_RANKS = TRAIN_MAX_RANKS


def form_default(name: str) -> str:
    """What a form field starts with: `TrainSettings`'s default, as text (`2M` for tokens;
    empty where the default means "automatic": context 0, snapshot_every 0; `ranks`:
    `TrainStartParams`'s)."""
    if name == RANKS_FIELD:
        return str(DEFAULT_RANKS)
    f = _FIELDS[name]
    value = f.default
    if value is msgspec.NODEFAULT or (name in AUTOMATIC_ZERO and value == 0):
        return ""
    if name == "tokens":
        return tokens_label(value)
    return str(value)


class FormError(ValueError):
    """A form value the app can reject before asking the engine; one line for a person."""


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


def parse_ranks(text: str) -> int:
    """The form's ranks: a whole number from 1 to `MAX_RANKS`; empty is the engine's default (1)."""
    if not text.strip():
        return DEFAULT_RANKS
    n = parse_int(RANKS_FIELD, text)
    if not 1 <= n <= MAX_RANKS:
        raise FormError(f"{RANKS_FIELD}: {text.strip()!r} is not a whole number from 1 to {MAX_RANKS}")
    return n


def check_ranks(settings: dict, ranks: int) -> None:
    """The batch size (the global batch; the engine's default when left out) must divide
    evenly over the ranks: the engine says the same, this says it before asking."""
    batch = settings.get(BATCH_FIELD, _FIELDS[BATCH_FIELD].default)
    if batch % ranks:
        raise FormError(f"{RANKS_FIELD}: the batch size ({batch}) must divide evenly over {ranks} ranks")


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
    hook = str(settings.get(HOOK_FIELD) or "")
    if not hook:
        raise FormError("hook: pick a hook point")
    if out.strip():
        base = out.strip().rstrip("/")
        folders = [base] if len(archs) == 1 else [f"{base}/{a}" for a in archs]
    else:
        short = hook_short(hook)
        n = 1
        while any(taken(f"runs/{a}-{short}-{n}") for a in archs):
            n += 1
        folders = [f"runs/{a}-{short}-{n}" for a in archs]
    return [{**settings, "arch": a, "out": f} for a, f in zip(archs, folders)]
