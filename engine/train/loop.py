"""The training loop: several sae_lens training SAEs fed from one model pass, step by step.

`train()` is what the CLI, the server and the default-SAE recipe call. It drives
sae_lens's own `SAETrainer.step` (optimiser, schedulers, losses are sae_lens's)
and adds what sae_lens does not do: per-step metrics streamed to a callback and
a JSON-lines file, exact checkpoint/resume, and cooperative cancellation.

Notes
- Runs trained side by side share the model, data order and batch size, so one
  forward pass per chunk feeds them all; they may differ in hook, architecture,
  width, sparsity, seed and length.
- Inputs are scaled to mean norm sqrt(d_in) (sae_lens's
  `expected_average_only_in`); the factor is folded into the weights at the end,
  exactly as sae_lens's own runner does, so saved SAEs take raw activations.
- MSE is reported in the model's own units (unscaled).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from engine import distributed
from engine.distributed import Ranks
from engine.errors import UserError
from engine.train import checkpoint as ckpt
from engine.train.config import RUN_CONFIG, TrainConfig, sae_lens_config, trainer_config
from engine.train.metrics import FiringTracker, density_histogram, step_metrics
from engine.train.snapshots import is_snapshot_step, remove_leftovers, save_snapshot, snapshot_every
from engine.train.sparse_step import SparseStep, StepOutput

HISTOGRAM_EVERY = 10
FLUSH_S = 0.5  # metrics lines are written at most this long after their step
# A run asked to stop (a stop request, ctrl+c): the one word is "stopped", never paused or cancelled.
STOPPED_MESSAGE = "stopped (checkpointed): resume continues it"
# Tests only: seconds to wait after each step, so a tiny run lasts long enough to be
# watched. A number, or a file holding one (read at every step, so a test can let the
# run finish quickly once it has seen what it waited for).
STEP_DELAY = os.environ.get("SAESCOPE_TEST_STEP_DELAY") or ""


def _test_step_delay() -> float:
    if not STEP_DELAY:
        return 0.0
    try:
        return float(STEP_DELAY)
    except ValueError:
        try:
            return float(Path(STEP_DELAY).read_text() or 0)
        except (OSError, ValueError):
            return 0.0


@dataclass
class Run:
    cfg: TrainConfig
    dir: Path
    sae: object
    trainer: object
    tracker: FiringTracker
    log: "MetricsLog"
    eval_windows: torch.Tensor  # held-out windows of the model's corpus, for evaluations
    scale: float = 1.0
    step: Callable = None  # one training step on a raw batch -> `StepOutput`
    main: bool = True  # this rank writes the run's files (see `train`)
    index: int = 0  # the run's place in `train`'s list (what `on_record` is called with)


def _step_function(trainer, ranks: Ranks | None = None) -> Callable:
    """The fast sparse step where it applies (TopK, BatchTopK), else sae_lens's own;
    data-parallel over `ranks` (see `engine.train.data_parallel`)."""
    ranks = ranks or Ranks()
    if SparseStep.supports(trainer.sae, trainer):
        return SparseStep(trainer, ranks)
    if not ranks.distributed:
        return lambda batch: StepOutput.of(trainer.step(batch))
    from engine.train import data_parallel as dp

    dp.average_on_backward(trainer.sae, ranks)

    def step(batch: torch.Tensor) -> StepOutput:
        out = StepOutput.of(trainer.step(batch))
        trainer.n_training_samples += (ranks.world - 1) * len(batch)  # sae_lens counted this rank's rows
        out.firing = (dp.global_last_row(out.codes, ranks), dp.global_counts(out.codes, ranks),
                      len(batch) * ranks.world)
        return out
    return step


def _training_sae(cfg: TrainConfig, d_in: int, model_name: str, n_ctx: int, device: str):
    from sae_lens import BatchTopKTrainingSAE, JumpReLUTrainingSAE, StandardTrainingSAE, TopKTrainingSAE

    cls = {"relu": StandardTrainingSAE, "jumprelu": JumpReLUTrainingSAE, "topk": TopKTrainingSAE,
           "batchtopk": BatchTopKTrainingSAE}[cfg.arch]
    torch.manual_seed(cfg.seed)
    return cls(sae_lens_config(cfg, d_in, model_name, n_ctx, device))


def _prepare_dir(cfg: TrainConfig, run_dir: Path, resume: bool) -> None:
    saved = run_dir / RUN_CONFIG
    if resume:
        check_resumable(run_dir)
        old = TrainConfig.load(run_dir)
        if old != cfg:
            diff = [f"{k}: {getattr(old, k)!r} -> {getattr(cfg, k)!r}" for k in cfg.__struct_fields__
                    if getattr(old, k) != getattr(cfg, k)]
            raise UserError(f"{run_dir} holds a run with a different configuration ({'; '.join(diff)})")
        return
    check_new(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    from engine.atomic import atomic_write_text

    atomic_write_text(saved, cfg.to_json())


def check_new(run_dir: Path, cli: bool = True) -> None:
    """UserError if `run_dir` cannot take a new run; the message names the CLI's flags
    (`cli`) or says the same in words (the server: the app has a form, not flags)."""
    run_dir = Path(run_dir)
    if (run_dir / RUN_CONFIG).exists() or (run_dir / "cfg.json").exists():
        other = "another --out" if cli else "choose another folder"
        if (run_dir / "eval.json").exists():
            raise UserError(f"{run_dir} already holds a finished run: {other}")
        resume = "pass --resume to continue it" if cli else "resume it"
        raise UserError(f"{run_dir} already holds a run: {resume}, or {other}")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"{run_dir} is a file, not a folder")


def check_resumable(run_dir: Path) -> None:
    """UserError unless `run_dir` holds a run that `--resume` can continue."""
    run_dir = Path(run_dir)
    if not (run_dir / RUN_CONFIG).is_file():
        what = "does not exist" if not run_dir.exists() else "is not a training run"
        raise UserError(f"cannot resume {run_dir}: it {what} (no {RUN_CONFIG})")
    # A run stopped in its final stage (saving, evaluating) still has its checkpoint and
    # is finished again; `eval.json` is written before `_finish` removes the checkpoint.
    if (run_dir / "eval.json").exists() or ((run_dir / "cfg.json").exists() and not ckpt.has_checkpoint(run_dir)):
        raise UserError(f"the run in {run_dir} has already finished")


def check_side_by_side(cfgs: list[TrainConfig]) -> None:
    first = cfgs[0]
    for c in cfgs[1:]:
        if (c.model, c.data_seed, c.batch_size, c.context) != (first.model, first.data_seed, first.batch_size,
                                                                first.context):
            raise UserError("runs trained side by side must share model, data_seed, batch_size and context")


def train(cfgs: list[TrainConfig], dirs: list[Path], lm=None, corpus=None,
          on_record: Callable[[int, dict], None] | None = None, check: Callable[[], None] = lambda: None,
          resume: bool = False, log: Callable[[str], None] = lambda m: None, job: str = "",
          ranks: Ranks | None = None, spread: bool = False) -> list[dict]:
    """Train every run to its end; returns each run's final `eval.json` contents.

    `ranks`: several ranks under torchrun (default: this process's ranks, one when
    not under torchrun). Every rank calls `train` with the same arguments, and the
    model pass is split over the ranks (`engine.train.sharded`). Then either
    - data-parallel (the default): every rank trains every run on its slice of the
      global batch `batch_size`, gradients averaged; only rank 0 writes files, calls
      `on_record` and `log`, and returns the results (the others return []); or
    - `spread`: the runs are dealt to the ranks (run i to rank i mod N), and each
      rank trains its own runs on the whole batch, from activations the ranks share;
      each rank writes, reports and returns its own runs.

    Each run folder's `state.json` says what happened: running (this process's pid),
    then finished, stopped (asked to stop: checkpointed, `resume` continues it) or
    failed (with the message);
    `job` is recorded in it (the id of the training process, see `engine.train.jobs`)."""
    from sae_lens.training.sae_trainer import SAETrainer

    from engine.corpus import check_tokenizer, corpus_for, default_context
    from engine.models import load_model
    from engine.saes import hook_width
    from engine.train.activations import ActivationSource

    if not cfgs:
        raise UserError("nothing to train")
    for c in cfgs:
        c.validate()
    check_side_by_side(cfgs)
    if len({Path(d).resolve() for d in dirs}) != len(dirs):
        raise UserError("each run needs its own output folder")
    ranks = ranks or distributed.ranks()
    main = ranks.is_main
    spread = spread and ranks.distributed
    if spread and len(cfgs) < ranks.world:
        raise UserError(f"spreading runs over {ranks.world} ranks needs at least as many runs (got {len(cfgs)})")
    mine = [i for i in range(len(cfgs)) if not spread or i % ranks.world == ranks.rank]
    writes = main or spread  # this rank writes (and reports) its runs
    if not writes:
        on_record, log = (lambda i, r: None), (lambda m: None)
    lm = lm or load_model(cfgs[0].model)
    corpus = check_tokenizer(corpus, lm) if corpus is not None else corpus_for(None, lm)
    widths = {c.hook: hook_width(lm, c.hook) for c in cfgs}
    n_ctx = default_context(lm.model.cfg.n_ctx, cfgs[0].context)
    if main:
        for c, d in zip(cfgs, dirs):
            _prepare_dir(c, Path(d), resume)
            if resume:
                ckpt.recover(Path(d))  # before any rank reads the checkpoint
                remove_leftovers(Path(d))
    ranks.barrier()

    started = time.time()  # the run's rate counts every model pass, the first included
    windows = corpus.windows(n_ctx, split="train")
    if ranks.distributed:
        from engine.train.sharded import ShardedActivationSource

        check = _Agreed(check, ranks)
        hooks_of = {q: sorted({cfgs[i].hook for i in range(q, len(cfgs), ranks.world)})
                    for q in range(ranks.world)} if spread else None
        source = ShardedActivationSource(lm, windows, widths, cfgs[0].batch_size, cfgs[0].data_seed, ranks,
                                         check=check.local, hooks_of=hooks_of)
    else:
        source = ActivationSource(lm, windows, widths, cfgs[0].batch_size, cfgs[0].data_seed, check=check)
    runs, starts = [], []
    if spread and resume:  # every rank must resume from the same step: look at the others' runs too
        starts = [ckpt.checkpoint_step(Path(dirs[i])) or 0 for i in range(len(cfgs)) if i not in mine]
    for i in mine:
        c, d = cfgs[i], Path(dirs[i])
        sae = _training_sae(c, widths[c.hook], lm.name, n_ctx, lm.device)
        trainer = SAETrainer(trainer_config(c, lm.device), sae, data_provider=iter(()))
        tracker = FiringTracker(c.d_sae, c.dead_window)
        if resume and ckpt.has_checkpoint(d):
            start = ckpt.load_checkpoint(d, sae, trainer, tracker)
            if writes:
                ckpt.truncate_metrics(d, start)
            log(f"{d}: resuming from step {start}")
        else:
            start = 0
            sample = source.norm_sample()[c.hook]
            trainer.activation_scaler.scaling_factor = math.sqrt(widths[c.hook]) / sample.norm(dim=-1).mean().item()
            if writes:
                (d / ckpt.METRICS).unlink(missing_ok=True)
        starts.append(start)
        if ranks.distributed and not spread:
            from engine.train.data_parallel import broadcast_parameters

            broadcast_parameters(sae, ranks)
        eval_windows = corpus.windows(n_ctx, split="held_out", max_tokens=c.eval_tokens)
        runs.append(Run(c, d, sae, trainer, tracker, MetricsLog(d / ckpt.METRICS) if writes else _NoLog(),
                        eval_windows, trainer.activation_scaler.scaling_factor,
                        _step_function(trainer, Ranks() if spread else ranks), writes, i))
    if len(set(starts)) != 1:
        raise UserError(f"the runs' checkpoints are at different steps ({starts}); resume them one by one")

    if writes:
        for r in runs:
            _state(r.dir, "running", job)
    try:
        try:
            _loop(runs, source, starts[0], on_record or (lambda i, r: None), check, log, started,
                  total=max(c.steps for c in cfgs))
        finally:
            source.close()
            for r in runs:
                r.log.close()
        if not writes:
            return []
        results = []
        for r in runs:
            results.append(_finish(r, lm, log, check.local if ranks.distributed else check))
            _state(r.dir, "finished", job)
        return results
    except BaseException as e:
        from engine.jobs import Cancelled

        stopped = isinstance(e, (Cancelled, KeyboardInterrupt))
        message = STOPPED_MESSAGE if stopped else (str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}")
        for r in (runs if writes else []):
            if not (r.dir / "eval.json").exists():
                _state(r.dir, "stopped" if stopped else "failed", job, message)
        raise


def _state(run_dir: Path, state: str, job: str, message: str = "") -> None:
    from engine.protocol import RunState

    ckpt.write_state(run_dir, RunState(state, job=job, pid=os.getpid() if state == "running" else None,
                                       message=message, updated=time.time(),
                                       step=ckpt.last_step(run_dir), checkpoint=ckpt.checkpoint_step(run_dir),
                                       resumable=state != "finished" and ckpt.checkpoint_step(run_dir) is not None))


def _loop(runs: list[Run], source, start: int, on_record, check, log, t0: float, total: int) -> None:
    """Steps `start`..`total` of every run (each to its own end); the rate each step
    reports is wall-clock since `t0` (before the first model pass) over the tokens
    this process has trained on."""
    tokens_done = 0
    if start == 0:
        for r in runs:
            if snapshot_every(r.cfg) and r.main:
                _snapshot(r, 0, r.index, on_record)
    for step in range(start, total):
        try:
            check()
            batch = source.batch(step, device=runs[0].sae.W_dec.device, last=total - 1)  # checks too
        except BaseException:
            for r in runs:  # keep everything up to the last finished step
                if step < r.cfg.steps and r.main:
                    r.log.flush()
                    ckpt.save_checkpoint(r.dir, step, r.sae, r.trainer, r.tracker)
            raise
        tokens_done += source.batch_size
        for r in runs:
            i = r.index
            if step >= r.cfg.steps:
                continue
            lr = r.trainer.optimizer.param_groups[0]["lr"]
            out = r.step(batch[r.cfg.hook])
            r.trainer.n_training_steps += 1
            if not r.main:
                continue
            record = _step_record(r, out, step, lr, tokens_done / max(1e-9, time.time() - t0))
            r.log.write(record)
            ckpt.kill_point("step-logged")
            on_record(i, record)
            done = step + 1
            if is_snapshot_step(r.cfg, done):
                _snapshot(r, done, i, on_record)
            if done == r.cfg.steps or (r.cfg.checkpoint_every and done % r.cfg.checkpoint_every == 0):
                r.log.flush()  # every line up to a checkpoint is on disk before it
                ckpt.save_checkpoint(r.dir, done, r.sae, r.trainer, r.tracker)
            if r.cfg.eval_every and done % r.cfg.eval_every == 0 and done < r.cfg.steps:
                source.settle()  # the evaluation runs the model with hooks: no prefetch alongside
                # rank 0 evaluates alone: its check must not be the ranks' agreed one
                rec = {"kind": "eval", "step": step, **_evaluate_training(r, source.lm, getattr(check, "local", check))}
                r.log.write(rec)
                on_record(i, rec)
        for r in runs:
            r.log.flush_if_due()
        if step % 50 == 0:
            log(f"step {step}/{total}")
        if STEP_DELAY:
            time.sleep(_test_step_delay())
    for r in runs:
        r.log.flush()


def _snapshot(r: Run, done: int, i: int, on_record) -> None:
    save_snapshot(r.dir, done, r.sae.W_dec, r.tracker.first_fired)
    rec = {"kind": "snapshot", "step": done - 1, "tokens": done * r.cfg.batch_size}
    r.log.write(rec)
    r.log.flush()  # a snapshot's line is on disk with its file, so followers can ask for it
    on_record(i, rec)


class _Agreed:
    """A data-parallel run's stop check: a stop request on any rank stops every rank
    at the same step (one MAX all-reduce per call). `local` is this rank's own check."""

    def __init__(self, check: Callable[[], None], ranks: Ranks) -> None:
        self.local, self.ranks = check, ranks

    def __call__(self) -> None:
        from engine.jobs import Cancelled

        try:
            self.local()
            asked = False
        except Cancelled:
            asked = True
        if self.ranks.any(asked):
            raise Cancelled()


class _NoLog:
    """The metrics log of a rank that does not write (not rank 0)."""

    def write(self, record: dict) -> None:
        pass

    def flush_if_due(self) -> None:
        pass

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass


class MetricsLog:
    """A run's `metrics.jsonl`, written in coalesced lines: records are kept until
    `FLUSH_S` has passed (or a checkpoint, a snapshot or the end needs them on disk),
    then written in one call."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "a")
        self.pending: list[str] = []
        self.last = time.monotonic()

    def write(self, record: dict) -> None:
        self.pending.append(json.dumps(record) + "\n")

    def flush_if_due(self) -> None:
        if self.pending and time.monotonic() - self.last >= FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.pending:
            self.file.write("".join(self.pending))
            self.pending.clear()
        self.file.flush()
        self.last = time.monotonic()

    def close(self) -> None:
        self.flush()
        self.file.close()


@torch.no_grad()
def _step_record(r: Run, out, step: int, lr: float, rate: float) -> dict:
    """The step's metrics line. The activations come as `Codes` (the active latents
    only), so nothing here touches [batch, d_sae]."""
    x = out.sae_in / r.scale
    # sae_lens's MSE loss is the per-token squared error, averaged over the batch, in scaled units
    squared_error = out.losses["mse_loss"].item() * len(x) / r.scale ** 2
    if out.firing is not None:  # data-parallel: the tracker counts the whole batch, the rest is rank 0's slice
        r.tracker.update_counts(*out.firing, step=step)
    else:
        r.tracker.update(out.codes, step)
    rec = {"kind": "step", "step": step, "tokens": (step + 1) * r.cfg.batch_size,
           "loss": out.loss.item(), "losses": {k: float(v) for k, v in out.losses.items()},
           **step_metrics(x, squared_error, out.codes), "dead_fraction_window": r.tracker.dead_fraction_window(),
           "dead_fraction_density": r.tracker.dead_fraction_density(), "lr": lr, "tokens_per_s": rate}
    if step % HISTOGRAM_EVERY == 0 or step + 1 == r.cfg.steps:
        rec["density_histogram"] = density_histogram(r.tracker.density())
    return rec


def _evaluate_training(r: Run, lm, check) -> dict:
    from engine.train.evaluate import evaluate, sae_reconstructor

    r.sae.eval()
    result = evaluate(lm, r.cfg.hook, sae_reconstructor(r.sae, r.scale), r.eval_windows, r.cfg.d_sae, check=check)
    r.sae.train()
    return result


def _finish(r: Run, lm, log, check=None) -> dict:
    """Fold the input scale, save the sae_lens inference folder, evaluate it from disk.
    A cancel during the evaluation (`check`) leaves the checkpoint: `--resume` finishes the run."""
    from safetensors.torch import save_file

    from engine.atomic import atomic_write_text
    from engine.saes import load_sae
    from engine.train.evaluate import evaluate, sae_reconstructor

    r.trainer.set_final_sae_metadata()
    r.sae.fold_activation_norm_scaling_factor(r.scale)
    with tempfile.TemporaryDirectory(dir=r.dir, prefix=".final.") as tmp:
        r.sae.save_inference_model(tmp)
        save_file({"sparsity": r.tracker.density().float().clamp_min(1e-10).log10()},
                  str(Path(tmp) / "sparsity.safetensors"))
        for name in ("sae_weights.safetensors", "sparsity.safetensors", "cfg.json"):  # cfg.json last
            os.chmod(Path(tmp) / name, 0o644)  # safetensors writes 0600; a run's SAE is shared like its other files
            os.replace(Path(tmp) / name, r.dir / name)
            ckpt.kill_point("final-saving")
    ckpt.kill_point("final-saved")
    sae = load_sae(r.dir, device=lm.device)
    result = {"sae": str(r.dir), "hook": r.cfg.hook, "arch": r.cfg.arch, "d_sae": r.cfg.d_sae,
              **evaluate(lm, r.cfg.hook, sae_reconstructor(sae), r.eval_windows, r.cfg.d_sae, check=check)}
    atomic_write_text(r.dir / "eval.json", json.dumps(result, indent=2) + "\n")
    ckpt.kill_point("final-evaluated")
    ckpt.remove_checkpoint(r.dir)
    log(f"{r.dir}: explained variance {result['explained_variance']:.3f}, L0 {result['l0']:.1f}")
    return result
