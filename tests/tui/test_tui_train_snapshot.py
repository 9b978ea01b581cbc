"""Snapshots of the Training pane at 80x24, with runs reopened from folders written
here in the engine's format (made-up but fixed numbers, so the picture never
changes): two finished runs with their curves; a folder of side-by-side runs
reopened as one comparison; and a start into a folder that holds a run, its error
wrapped in full over the curves, the table keeping its rows.

Notes
- The last two work in `tmp_path` with relative folders (the engine starts there
  too), so the paths on screen are the same on every machine.

Regenerate with `--snapshot-update` when the pane's layout changes on purpose.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from tui.widgets.train_pane import TrainPane

STEPS, BATCH, D_SAE = 40, 256, 64
EDGES = [-8 + 0.25 * i for i in range(33)]


def step_record(step: int, scale: float, l0_start: float) -> dict:
    """One `kind: step` line with every field the engine writes."""
    loss = 150 * scale + 120 * math.exp(-step / 8)
    ev = 0.6 / scale - 0.5 * math.exp(-step / 10)
    rec = {"kind": "step", "step": step, "tokens": (step + 1) * BATCH, "loss": loss,
           "losses": {"mse_loss": loss, "auxiliary_reconstruction_loss": 0.0}, "mse": loss / 150,
           "explained_variance": ev, "l0": 4 + l0_start * math.exp(-step / 6), "l1": 0.5 + step / 100,
           "dead_fraction_window": min(0.25, step / 160) * scale, "dead_fraction_density": 0.0,
           "lr": 4e-4, "tokens_per_s": 1000.0 + step}
    if step % 10 == 0 or step == STEPS - 1:
        counts = [0] * 32
        for i, c in enumerate((2, 5, 9, 14, 12, 8, 4)):
            counts[20 + i + min(step // 10, 4)] = c
        rec["density_histogram"] = {"edges": EDGES, "counts": counts, "never_fired": D_SAE - sum(counts)}
    return rec


def write_run(folder: Path, arch: str, scale: float, l0_start: float) -> None:
    folder.mkdir(parents=True)
    config = {"hook": "blocks.0.hook_mlp_out", "arch": arch, "d_sae": D_SAE, "k": 4, "l1": 5.0,
              "tokens": STEPS * BATCH, "batch_size": BATCH, "eval_tokens": 512}
    (folder / "saescope.json").write_text(json.dumps(config))
    lines = [json.dumps(step_record(s, scale, l0_start)) for s in range(STEPS)]
    (folder / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    final = {"sae": str(folder), "hook": config["hook"], "arch": arch, "d_sae": D_SAE,
             "ce_loss_clean": 4.6, "ce_loss_with_sae": 5.2 * scale, "ce_loss_zero_ablation": 6.0,
             "ce_loss_score": 0.5 / scale, "kl_div_with_sae": 0.6, "kl_div_zero_ablation": 1.6,
             "kl_div_score": 0.62 / scale, "mse": 0.9 * scale, "explained_variance": 0.55 / scale,
             "l0": 4.0 * scale, "dead_fraction": 0.125 * scale, "tokens": 512}
    (folder / "eval.json").write_text(json.dumps(final))


def test_training_pane_80x24(snap_compare, make_app, model_loaded, wait_until, tmp_path):
    write_run(tmp_path / "topk-demo", "topk", 1.0, 0.0)
    write_run(tmp_path / "relu-demo", "relu", 1.2, 30.0)

    async def run_before(pilot) -> None:
        app = pilot.app
        await model_loaded(pilot)
        app.action_train("curves")
        pane = app.query_one(TrainPane)
        for name in ("topk-demo", "relu-demo"):
            pane.open_run(str(tmp_path / name))
            await wait_until(pilot, lambda: str(tmp_path / name) in pane.book.runs and not app.jobs, 20,
                             f"{name} to open")
        pane.runs_table.select(str(tmp_path / "topk-demo"))
        await pilot.pause(0.5)  # a redraw tick

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def write_pair(root: Path) -> None:
    """Two runs trained side by side: `root/topk`, `root/relu`."""
    write_run(root / "topk", "topk", 1.0, 0.0)
    write_run(root / "relu", "relu", 1.2, 30.0)


async def open_and_wait(pilot, wait_until, path: str, done) -> None:
    pane = pilot.app.query_one(TrainPane)
    pane.open_run(path)
    await wait_until(pilot, lambda: done(pane) and not pilot.app.jobs, 20, f"{path} to open")


def test_side_by_side_runs_reopened_as_one_comparison_80x24(snap_compare, make_app, model_loaded, wait_until,
                                                             tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_run(tmp_path / "other", "batchtopk", 1.1, 10.0)
    write_pair(tmp_path / "pair")

    async def run_before(pilot) -> None:
        await model_loaded(pilot)
        pilot.app.action_train("curves")
        await open_and_wait(pilot, wait_until, "other", lambda pane: "other" in pane.book.runs)
        await open_and_wait(pilot, wait_until, "pair", lambda pane: pane.view == "compare")
        await pilot.pause(0.5)  # a redraw tick

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)


def test_a_start_into_a_folder_that_holds_a_run_80x24(snap_compare, make_app, model_loaded, wait_until,
                                                       tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_pair(tmp_path / "pair")
    taken = "an-older-run-folder-whose-name-is-long-enough-to-wrap"
    write_run(tmp_path / taken, "topk", 1.0, 0.0)

    async def run_before(pilot) -> None:
        app = pilot.app
        await model_loaded(pilot)
        app.action_train("curves")
        await open_and_wait(pilot, wait_until, "pair", lambda pane: pane.view == "compare")
        pane = app.query_one(TrainPane)
        app.action_train("new")
        await pilot.pause(0.05)
        pane.form.fill(archs=["topk"], out=taken, d_sae="64", k="4", tokens="10240", batch_size="256")
        pane.form.submit()
        await wait_until(pilot, lambda: "already holds" in pane.info and not app.jobs, 30, "the engine's error")
        await pilot.pause(0.5)  # a redraw tick

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
