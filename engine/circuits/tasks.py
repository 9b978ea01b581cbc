"""Circuit tasks: JSON-lines files of contrastive pairs or of single prompts.

A line is either a contrastive pair
    {"clean": "...", "patch": "...", "clean_answer": " was", "patch_answer": " were"}
or a single prompt with its answer
    {"prompt": "...", "answer": " was"}
and a file holds one kind only. Answers are single tokens of the model (with their
leading space where they have one); prompts are tokenized with the model's BOS.

The metric of a pair is `logit(patch_answer) - logit(clean_answer)` at the last
position; of a single prompt, the answer's logit. For a single prompt the "patch"
state of a feature is its mean over the task's prompts (or zero): there is no
patch prompt to take it from.

Notes
- All prompts of a task have one token length: nodes are (site, feature, position)
  and the means that ablate them are taken per position, which needs aligned
  positions. The shipped tasks are built that way (`engine/recipes/tasks.py`).
- `split` gives the pairs used to find the circuit and the held-out pairs it is
  evaluated on: every third pair is held out, so both halves cover the whole file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from engine.errors import UserError
from engine.paths import WEIGHTS_DIR

TASKS_DIR = WEIGHTS_DIR / "tasks"
PAIR_KEYS = {"clean", "patch", "clean_answer", "patch_answer"}
SINGLE_KEYS = {"prompt", "answer"}


@dataclass
class Task:
    """A task in the model's tokens: `clean`/`patch` [N, T] (patch is None for single
    prompts), answer ids [N] each (`patch_answers` None for single prompts)."""

    name: str
    kind: str  # "pairs" or "single"
    clean: object  # torch.LongTensor [N, T], BOS first
    patch: object | None
    clean_answers: object  # [N]
    patch_answers: object | None
    texts: list[dict]

    def __len__(self) -> int:
        return self.clean.shape[0]

    @property
    def length(self) -> int:
        return self.clean.shape[1]

    def subset(self, rows: list[int]) -> "Task":
        pick = lambda t: None if t is None else t[rows]  # noqa: E731
        return Task(self.name, self.kind, self.clean[rows], pick(self.patch), self.clean_answers[rows],
                    pick(self.patch_answers), [self.texts[i] for i in rows])

    def split(self) -> tuple["Task", "Task"]:
        """(discovery, held out): every third pair is held out; a task of fewer than
        three pairs is used whole for both."""
        n = len(self)
        if n < 3:
            return self, self
        held = [i for i in range(n) if i % 3 == 2]
        return self.subset([i for i in range(n) if i % 3 != 2]), self.subset(held)


def shipped_dir(lm=None) -> Path:
    """The shipped tasks of a model: `weights/tasks/` (the default model) or its
    sub-folder named by the model's spec (`weights/tasks/smollm2-135m/`)."""
    if lm is None or lm.spec in ("default", "mini-gelu-1l"):
        return TASKS_DIR
    return TASKS_DIR / lm.spec


def task_path(spec: str | Path, lm=None) -> Path:
    """A task file from a path or the name of a task shipped for the model (`was_were`)."""
    p = Path(spec).expanduser()
    if p.is_file():
        return p
    shipped = shipped_dir(lm) / f"{spec}.jsonl"
    if shipped.is_file():
        return shipped
    names = ", ".join(shipped_tasks(lm)) or "none"
    raise UserError(f"no task file {str(spec)!r}: give a JSON-lines file or a task shipped for this model ({names})")


def shipped_tasks(lm=None) -> list[str]:
    return sorted(p.stem for p in shipped_dir(lm).glob("*.jsonl"))


def read_lines(path: Path) -> list[dict]:
    """The task file's records; a `UserError` naming the first bad line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read task file {path}: {e}") from None
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path.name} line {n}: not JSON ({e.msg})") from None
        if not isinstance(rec, dict):
            raise UserError(f"{path.name} line {n}: a line is a JSON object")
        records.append((n, rec))
    if not records:
        raise UserError(f"{path.name} is empty: a task needs at least one pair or prompt")
    return records


def _kind(path: Path, n: int, rec: dict) -> str:
    keys = set(rec)
    if PAIR_KEYS <= keys:
        kind = "pairs"
    elif SINGLE_KEYS <= keys:
        kind = "single"
    else:
        raise UserError(f"{path.name} line {n}: a line has clean, patch, clean_answer and patch_answer "
                        f"(a pair) or prompt and answer (a single prompt); it has {', '.join(sorted(keys)) or 'nothing'}")
    for k in (PAIR_KEYS if kind == "pairs" else SINGLE_KEYS):
        if not isinstance(rec[k], str) or not rec[k]:
            raise UserError(f"{path.name} line {n}: {k} must be a non-empty string")
    return kind


def load_task(spec: str | Path, lm) -> Task:
    """Read, check and tokenize a task for `lm`; every problem is one `UserError`."""
    import torch

    path = task_path(spec, lm)
    records = read_lines(path)
    kinds = {_kind(path, n, rec) for n, rec in records}
    if len(kinds) > 1:
        raise UserError(f"{path.name} mixes pairs and single prompts: a task holds one kind")
    kind = kinds.pop()
    model = lm.model

    def answer(n: int, key: str, text: str) -> int:
        ids = model.to_tokens(text, prepend_bos=False)[0].tolist()
        if len(ids) != 1:
            pieces = " + ".join(repr(t) for t in model.to_str_tokens(text, prepend_bos=False))
            raise UserError(f"{path.name} line {n}: {key} {text!r} is {len(ids)} tokens ({pieces}); "
                            "an answer must be one token")
        return ids[0]

    clean, patch, ca, pa = [], [], [], []
    for n, rec in records:
        if kind == "pairs":
            if rec["clean"] == rec["patch"]:
                raise UserError(f"{path.name} line {n}: clean and patch are the same prompt")
            c, p = model.to_tokens(rec["clean"])[0], model.to_tokens(rec["patch"])[0]
            if len(c) != len(p):
                raise UserError(f"{path.name} line {n}: clean is {len(c) - 1} tokens and patch {len(p) - 1}; "
                                "a pair's prompts must have the same token length")
            clean.append(c), patch.append(p)
            ca.append(answer(n, "clean_answer", rec["clean_answer"]))
            pa.append(answer(n, "patch_answer", rec["patch_answer"]))
        else:
            clean.append(model.to_tokens(rec["prompt"])[0])
            ca.append(answer(n, "answer", rec["answer"]))
    lengths = sorted({len(c) - 1 for c in clean})
    if len(lengths) > 1:
        raise UserError(f"{path.name}: prompts have {len(lengths)} different token lengths "
                        f"({', '.join(map(str, lengths[:5]))}{'…' if len(lengths) > 5 else ''}); all prompts of "
                        "a task must have one length (nodes are per position)")
    if lengths[0] > model.cfg.n_ctx - 1:
        raise UserError(f"{path.name}: prompts of {lengths[0]} tokens exceed the model's context ({model.cfg.n_ctx})")
    if kind == "pairs" and any(a == b for a, b in zip(ca, pa)):
        n = next(n for (n, _), a, b in zip(records, ca, pa) if a == b)
        raise UserError(f"{path.name} line {n}: clean_answer and patch_answer are the same token")
    device = next(model.parameters()).device
    as_long = lambda rows: torch.stack(rows).to(device)  # noqa: E731
    ids = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return Task(path.stem, kind, as_long(clean), as_long(patch) if patch else None, ids(ca),
                ids(pa) if pa else None, [rec for _, rec in records])
