"""Headless entry points for training and evaluation (what `saescope train/eval` call).

Notes
- One `--arch` and one `--seed` train into `--out` itself; several train into
  `--out/<arch>` (or `--out/<arch>-s<seed>` with several seeds), side by side.
- A `--config` file is a JSON list of `TrainConfig` fields, each with an optional
  `"out"` sub-folder name.
- The progress display goes to stderr, so `--json` lines on stdout stay clean.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from engine.errors import UserError
from engine.train.config import TrainConfig

PLAIN_EVERY_S = 10.0  # progress lines without a terminal


def plan_runs(hook: str, archs: list[str], seeds: list[int], out: Path, config: Path | None,
              **settings) -> tuple[list[TrainConfig], list[Path]]:
    if config is not None:
        try:
            entries = json.loads(Path(config).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise UserError(f"cannot read --config {config}: {e}") from None
        if not isinstance(entries, list) or not entries:
            raise UserError("--config must hold a non-empty JSON list of runs")
        cfgs, dirs = [], []
        for i, e in enumerate(entries):
            e = dict(e)
            sub = e.pop("out", f"run{i}")
            cfgs.append(TrainConfig.from_dict(e))
            dirs.append(Path(out) / sub)
        return cfgs, dirs
    cfgs, dirs = [], []
    for arch in archs:
        for seed in seeds:
            cfgs.append(TrainConfig(hook=hook, arch=arch, seed=seed, **settings))
            name = arch if len(seeds) == 1 else f"{arch}-s{seed}"
            dirs.append(Path(out) if len(archs) * len(seeds) == 1 else Path(out) / name)
    return cfgs, dirs


def run_training_cli(cfgs: list[TrainConfig], dirs: list[Path], resume: bool, as_json: bool,
                     corpus=None, device: str | None = None, lm=None, spread: bool = False) -> list[dict]:
    """`corpus`: a spec for `corpus_for` or a ready `TokenCorpus`; `lm`: a loaded model
    (default: load the runs' model on `device`). Under torchrun, this rank's part of a
    data-parallel run (`run_rank_cli`)."""
    from engine.corpus import TokenCorpus, corpus_for
    from engine.distributed import ranks as get_ranks
    from engine.distributed import rank_device
    from engine.models import load_model
    from engine.train.loop import train

    for c in cfgs:  # bad settings fail before the model loads
        c.validate()
    if resume:
        from engine.train.loop import check_resumable

        for d in dirs:
            check_resumable(d)
    ranks = get_ranks(device)
    if ranks.distributed:
        return run_rank_cli(cfgs, dirs, resume, as_json, corpus, rank_device(device, ranks), ranks, spread)
    lm = lm or load_model(cfgs[0].model, device)
    text = corpus if isinstance(corpus, TokenCorpus) else corpus_for(corpus, lm)

    if as_json:
        def on_record(i: int, rec: dict) -> None:
            rec = {k: v for k, v in rec.items() if k != "density_histogram"}
            print(json.dumps({"run": str(dirs[i]), **rec}), flush=True)
        return train(cfgs, dirs, lm=lm, corpus=text, on_record=on_record, resume=resume)

    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    console = Console(stderr=True)
    # Started at the first record, so a configuration error prints no empty bars.
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[info]}"),
                        TimeRemainingColumn(), console=console, refresh_per_second=4,
                        disable=not console.is_terminal)
    tasks: list = []
    printed: dict[int, float] = {}

    def on_record(i: int, rec: dict) -> None:
        if not tasks:
            progress.start()
            tasks.extend(progress.add_task(f"{c.arch:>9} {Path(d).name}", total=c.steps, info="")
                         for c, d in zip(cfgs, dirs))
        if rec.get("kind") != "step":
            return
        done = rec["step"] + 1
        info = (f"loss {rec['loss']:.4f}  EV {rec['explained_variance']:.3f}  L0 {rec['l0']:.1f}  "
                f"quiet {rec['dead_fraction_window']:.1%}  {rec['tokens_per_s']:.0f} tok/s")
        progress.update(tasks[i], completed=done, info=info)
        # no terminal (a script, nohup): a plain line per run every few seconds, and the last step
        if not console.is_terminal and (done == cfgs[i].steps or time.time() - printed.get(i, 0) >= PLAIN_EVERY_S):
            printed[i] = time.time()
            console.print(f"{Path(dirs[i]).name}: step {done}/{cfgs[i].steps}  {info}", highlight=False)
    try:
        results = train(cfgs, dirs, lm=lm, corpus=text, on_record=on_record, resume=resume)
    finally:
        progress.stop()
    for r in results:
        console.print(f"[bold]{r['sae']}[/]: EV {r['explained_variance']:.3f}  L0 {r['l0']:.1f}  "
                      f"CE score {r['ce_loss_score']:.3f}  dead {r['dead_fraction']:.1%}")
    return results


def run_rank_cli(cfgs: list[TrainConfig], dirs: list[Path], resume: bool, as_json: bool, corpus,
                 device: str | None, ranks, spread: bool = False) -> list[dict]:
    """One rank of `saescope train` under torchrun. SIGINT and SIGTERM (torchrun's own
    shutdown sends it), or the launcher's stop file, ask to stop: the ranks agree and
    stop at the same step, checkpointed, and the command ends with status 0 (the
    launcher says it stopped). Rank 0 reports; its step metrics are those of its slice
    of the global batch (the firing statistics are the whole batch's). With `spread`,
    each rank trains, reports and evaluates its own runs."""
    import os
    import signal
    import sys
    import threading

    from engine.corpus import corpus_for
    from engine.jobs import Cancelled
    from engine.models import load_model
    from engine.train.launch import STOP_FILE_ENV
    from engine.train.loop import train

    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda signum, frame: stop.set())
    stop_file = os.environ.get(STOP_FILE_ENV)

    def check() -> None:
        if stop.is_set() or (stop_file and os.path.exists(stop_file)):
            raise Cancelled()

    lm = load_model(cfgs[0].model, device)
    text = corpus_for(corpus, lm)
    main = ranks.is_main or spread

    def on_record(i: int, rec: dict) -> None:
        if as_json:
            rec = {k: v for k, v in rec.items() if k != "density_histogram"}
            print(json.dumps({"run": str(dirs[i]), **rec}), flush=True)
        elif rec.get("kind") == "step" and (rec["step"] % 50 == 0 or rec["step"] + 1 == cfgs[i].steps):
            print(f"{Path(dirs[i]).name}: step {rec['step'] + 1}/{cfgs[i].steps}  loss {rec['loss']:.4f}  "
                  f"L0 {rec['l0']:.1f}  {rec['tokens_per_s']:.0f} tok/s on {ranks.world} ranks",
                  file=sys.stderr, flush=True)

    try:
        results = train(cfgs, dirs, lm=lm, corpus=text, on_record=on_record, check=check, resume=resume,
                        ranks=ranks, spread=spread,
                        log=(lambda m: print(f"[rank {ranks.rank}] {m}", file=sys.stderr, flush=True)))
    except Cancelled:
        if ranks.is_main and not stop_file:
            print(f"saescope: {stopped_line(dirs)}", file=sys.stderr, flush=True)
        return []
    finally:
        from engine.distributed import shutdown

        shutdown()
    if main and not as_json:
        for r in results:
            print(f"{r['sae']}: EV {r['explained_variance']:.3f}  L0 {r['l0']:.1f}  "
                  f"CE score {r['ce_loss_score']:.3f}  dead {r['dead_fraction']:.1%}", file=sys.stderr)
    return results


def stopped_line(dirs: list[Path]) -> str:
    """What `saescope train` says when ctrl+c stops it, in the words of the app and the
    run files: the runs are stopped, checkpointed, and `--resume` continues them."""
    from engine.train.checkpoint import checkpoint_step
    from engine.train.config import RUN_CONFIG

    steps = [s for s in (checkpoint_step(Path(d)) for d in dirs) if s is not None]
    if steps:
        return f"stopped at step {min(steps)} (checkpointed): the same command with --resume continues it"
    if dirs and all((Path(d) / RUN_CONFIG).is_file() for d in dirs):
        return "stopped before its first checkpoint: the same command with --resume starts it over"
    return "stopped before training began: run the same command again"


def evaluate_folder(sae_dir: Path, tokens: int, model: str | None = None, lm=None,
                    corpus: str | None = None, context: int | None = None, job=None) -> dict:
    """`saescope eval`: the metrics of a saved SAE on held-out tokens of the model's corpus;
    `job` (an `engine.jobs.Job`): cancel and progress."""
    from engine.corpus import corpus_for, default_context
    from engine.figures import DEAD_TOKENS
    from engine.models import load_model
    from engine.saes import check_fits, load_sae, model_spec_for
    from engine.train.evaluate import evaluate, sae_reconstructor

    if tokens < 256:
        raise UserError("--tokens must be at least 256")
    sae = load_sae(sae_dir)
    lm = lm or load_model(model or model_spec_for(sae))
    hook = check_fits(sae, lm)
    sae = sae.to(lm.device)
    n_ctx = default_context(lm.model.cfg.n_ctx, context)
    text = corpus_for(corpus, lm)
    windows = text.windows(n_ctx, split="held_out", max_tokens=tokens)
    dead = text.windows(n_ctx, split="held_out", max_tokens=DEAD_TOKENS)  # the dead rule's own window
    result = evaluate(lm, hook, sae_reconstructor(sae), windows, sae.cfg.d_sae, dead_windows=dead, job=job)
    return {"sae": str(sae_dir), "hook": hook, "architecture": sae.cfg.architecture(),
            "d_sae": sae.cfg.d_sae, "context": n_ctx, **result}
