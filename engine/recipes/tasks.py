"""Recipe for the shipped circuit tasks (`weights/tasks/*.jsonl`), cut from the corpus.

Run `saescope recipe tasks` (or `python -m engine.recipes.tasks`). Every pair is a
real window of the shipped corpus shard ending where the model must predict a token,
and its patch the same window with one token swapped for one that changes the answer:

- `was_were` (Austen): a subject right before ` was`/` were` (` he`, ` she`, ` I`,
  ` man`, ` lady`, ...), swapped for its other number (` they`, ` we`, ` men`, ...).
- `close_paren` (Python): a window that ends inside a call, right before its `)`;
  the patch opens it with `[` instead, so it should close with `]`.
- `from_import` (Python): a window ending in `from MODULE`, right before ` import`;
  the patch starts the line with `import` instead, so the line may end (`\n`).

The model is also poor at some tasks one might expect, so they are not shipped: a
bracket opened more than four tokens back (`close_paren` keeps the near ones), and
the surname after ` Mr.` from the novel in context (chance level on this 1-layer model).

Prompts of a task share one token length; the file holds `PAIRS` pairs drawn with a
fixed seed, balanced over the subjects or surnames. The README beside the tasks
records the model's accuracy and mean logit difference on each (`task_report`).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from collections import defaultdict
from pathlib import Path

from engine.paths import WEIGHTS_DIR

TASKS_DIR = WEIGHTS_DIR / "tasks"
PAIRS = 60
NUMBER = [(" he", " they"), (" she", " they"), (" it", " they"), (" I", " we"), (" man", " men"),
          (" lady", " ladies"), (" sister", " sisters"), (" friend", " friends"), (" child", " children")]


class Cutter:
    """Token-level pair building in a model's tokens, on the shipped corpus (tokenized
    for that model); a pair is kept only when both texts tokenize back to exactly the
    ids they were cut from."""

    def __init__(self, lm):
        from engine.corpus import corpus_for

        self.tok = lm.tokenizer
        self.corpus = corpus_for(None, lm)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False)

    def id(self, text: str) -> int | None:
        """The token id of `text` if it is one token in this tokenizer, else None."""
        ids = self.encode(text)
        return ids[0] if len(ids) == 1 else None

    def docs(self, source: str):
        for d in self.corpus.documents:
            if d.source == source:
                yield d, self.corpus.tokens[d.start + 1:d.end].tolist()

    def text(self, ids: list[int]) -> str | None:
        text = self.tok.decode(ids)
        return text if self.encode(text) == ids else None

    def pair(self, clean: list[int], patch: list[int], ca: int, pa: int) -> dict | None:
        c, p = self.text(clean), self.text(patch)
        if c is None or p is None:
            return None
        return {"clean": c, "patch": p, "clean_answer": self.tok.decode([ca]), "patch_answer": self.tok.decode([pa])}


def _balanced(groups: dict, n: int, rng: random.Random) -> list[dict]:
    """`n` items drawn round-robin from the groups (each shuffled), in a fixed order."""
    pools = [rng.sample(v, len(v)) for _, v in sorted(groups.items())]
    out: list[dict] = []
    while len(out) < n and any(pools):
        for pool in pools:
            if pool and len(out) < n:
                out.append(pool.pop())
    return out


def was_were(cut: Cutter, rng: random.Random, length: int = 16) -> list[dict]:
    was, were = cut.id(" was"), cut.id(" were")
    swap: dict[int, tuple[int, int, int]] = {}  # subject -> (other number, its answer, own answer)
    for single, plural in NUMBER:
        if cut.id(single) is None or cut.id(plural) is None:
            continue  # not one token each in this tokenizer
        swap[cut.id(single)] = (cut.id(plural), were, was)
        if plural not in (" they",):  # " they" would map back to one of several singulars
            swap[cut.id(plural)] = (cut.id(single), was, were)
    swap[cut.id(" they")] = (cut.id(" he"), was, were)
    groups = defaultdict(list)
    for _, ids in cut.docs("jane-austen"):
        for t in range(length, len(ids) - 1):
            s, nxt = ids[t - 1], ids[t]
            if s in swap and nxt == swap[s][2]:
                other, other_answer, answer = swap[s]
                window = ids[t - length:t]
                pair = cut.pair(window, window[:-1] + [other], answer, other_answer)
                if pair:
                    groups[s].append(pair)
    return _balanced(groups, PAIRS, rng)


def close_paren(cut: Cutter, rng: random.Random, length: int = 16) -> list[dict]:
    opening, closing, bra, ket = cut.id("("), cut.id(")"), cut.id("["), cut.id("]")
    # every token that opens or closes a bracket, by its net count (merged tokens like `()` are 0)
    vocab = cut.tok.get_vocab()
    depth = {i: sum(s.count(c) for c in "([{") - sum(s.count(c) for c in ")]}") for s, i in vocab.items()}
    groups = defaultdict(list)
    for _, ids in cut.docs("python-stdlib"):
        for t in range(length, len(ids)):
            if ids[t] != closing:
                continue
            window = ids[t - length:t]
            # the `(` this `)` closes: the last opener whose brackets are balanced after it
            level, at = 0, None
            for j in range(length - 1, -1, -1):
                level += depth.get(window[j], 0)
                if level == 1:
                    at = j if window[j] == opening else None
                    break
            if at is None or at == length - 1:
                continue
            patch = window[:at] + [bra] + window[at + 1:]
            pair = cut.pair(window, patch, closing, ket)
            if pair:
                groups[length - at].append(pair)  # balanced over how far back the bracket opened
    # further back than four tokens the model no longer closes `[` with `]` (README)
    return _balanced({k: v for k, v in groups.items() if k <= 5}, PAIRS, rng)


def from_import(cut: Cutter, rng: random.Random, length: int = 16) -> list[dict]:
    imp, newline = cut.id(" import"), cut.id("\n")
    swap = {cut.id("from"): cut.id("import"), cut.id(" from"): imp}  # a line's first word, indented or not
    line_breaks = {i for s, i in cut.tok.get_vocab().items() if "\u010a" in s}  # byte-level BPE's newline
    groups = defaultdict(list)
    for _, ids in cut.docs("python-stdlib"):
        for t in range(length, len(ids)):
            if ids[t] != imp:
                continue
            window = ids[t - length:t]
            line = max((j for j in range(length) if window[j] in line_breaks), default=None)
            if line is None or line + 1 >= length - 1 or window[line + 1] not in swap:
                continue
            patch = window[:line + 1] + [swap[window[line + 1]]] + window[line + 2:]
            pair = cut.pair(window, patch, imp, newline)
            if pair:
                groups[length - line].append(pair)  # balanced over the module name's length
    return _balanced(groups, PAIRS, rng)


BUILDERS = {"was_were": was_were, "close_paren": close_paren, "from_import": from_import}


def task_report(path: Path, lm) -> dict:
    """The model on a task: accuracy (clean prompts prefer the clean answer, patch
    prompts the patch answer) and the mean logit differences."""
    import torch

    from engine.circuits.tasks import load_task

    name = path.stem
    task = load_task(path, lm)
    with torch.no_grad():
        lc = lm.model(task.clean)[:, -1]
        lp = lm.model(task.patch)[:, -1]
    rows = torch.arange(len(task))
    dc = (lc[rows, task.clean_answers] - lc[rows, task.patch_answers]).double()
    dp = (lp[rows, task.patch_answers] - lp[rows, task.clean_answers]).double()
    return {"task": name, "pairs": len(task), "tokens": task.length - 1,
            "accuracy_clean": float((dc > 0).double().mean()), "accuracy_patch": float((dp > 0).double().mean()),
            "accuracy_both": float(((dc > 0) & (dp > 0)).double().mean()),
            "logit_diff_clean": float(dc.mean()), "logit_diff_patch": float(dp.mean())}


def write_readme(reports: list[dict], folder: Path, model: str) -> None:
    rows = "\n".join(f"| `{r['task']}` | {r['pairs']} | {r['tokens']} | {r['accuracy_clean']:.2f} | "
                     f"{r['accuracy_patch']:.2f} | {r['accuracy_both']:.2f} | {r['logit_diff_clean']:.2f} | "
                     f"{r['logit_diff_patch']:.2f} |" for r in reports)
    from engine.atomic import atomic_write_text

    atomic_write_text(folder / "README.md", f"""# Circuit tasks for {model}

Built by `saescope recipe tasks{'' if model == 'mini-gelu-1l' else ' --model ' + model}` from the shipped corpus shard (see
`engine/recipes/tasks.py`); one contrastive pair per line. Accuracy: the share of
clean prompts whose clean answer outscores the patch answer (and of patch prompts
the other way round; "both": a pair right on both sides). Logit difference: the
right answer's logit minus the other's, mean over the pairs.

| task | pairs | tokens | acc. clean | acc. patch | acc. both | logit diff clean | logit diff patch |
|---|---|---|---|---|---|---|---|
{rows}
""")


def tasks_dir(lm) -> Path:
    """Where a model's shipped tasks live: `weights/tasks/` for the default model,
    `weights/tasks/<spec>/` for another (its prompts have their own token lengths)."""
    return TASKS_DIR if lm.spec in ("default", "mini-gelu-1l") else TASKS_DIR / lm.spec


def main(argv: list[str] | None = None) -> None:
    from engine.atomic import atomic_write_text
    from engine.models import load_model

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="default", help="the model whose tokens the tasks are cut in")
    p.add_argument("--out", type=Path, default=None, help="default: weights/tasks (another model: a sub-folder)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    lm = load_model(a.model)
    out = a.out or tasks_dir(lm)
    out.mkdir(parents=True, exist_ok=True)
    cut = Cutter(lm)
    for name, build in BUILDERS.items():
        pairs = build(cut, random.Random(f"{a.seed}:{name}"))
        atomic_write_text(out / f"{name}.jsonl", "".join(json.dumps(p) + "\n" for p in pairs))
        print(f"{name}: {len(pairs)} pairs", file=sys.stderr)
    reports = [task_report(out / f"{name}.jsonl", lm) for name in BUILDERS]
    write_readme(reports, out, lm.name)
    for r in reports:
        print(json.dumps(r), file=sys.stderr)


if __name__ == "__main__":
    main()
