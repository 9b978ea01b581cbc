"""SAE training on the default model: resume exactness, the saved format, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import UserError
from engine.jobs import Cancelled
from engine.train.config import TrainConfig
from engine.train.loop import train
from tests.conftest import REPO, saescope_cmd

HOOK = "blocks.0.hook_mlp_out"


def tiny(arch="topk", **kw) -> TrainConfig:
    base = dict(hook=HOOK, arch=arch, d_sae=64, k=8, l1=1.0, tokens=256 * 12, batch_size=256,
                checkpoint_every=4, eval_tokens=128 * 4, dead_window=2048)
    return TrainConfig(**{**base, **kw})


def weights(run: Path) -> dict:
    return load_file(str(run / "sae_weights.safetensors"))


def test_cancel_then_resume_equals_an_uninterrupted_run(tmp_path, default_model):
    cfgs = [tiny("topk"), tiny("batchtopk", seed=1)]
    straight = [tmp_path / "a" / c.arch for c in cfgs]
    train(cfgs, straight, lm=default_model)

    calls = {"n": 0}

    def cancel_at_step_7():
        calls["n"] += 1
        if calls["n"] == 8:
            raise Cancelled()

    resumed = [tmp_path / "b" / c.arch for c in cfgs]
    with pytest.raises(Cancelled):
        train(cfgs, resumed, lm=default_model, check=cancel_at_step_7)
    assert json.loads((resumed[0] / "checkpoint" / "position.json").read_text())["step"] == 7
    train(cfgs, resumed, lm=default_model, resume=True)
    for a, b in zip(straight, resumed):
        wa, wb = weights(a), weights(b)
        assert wa.keys() == wb.keys()
        for k in wa:
            assert torch.equal(wa[k], wb[k]), k
        steps = [r["step"] for r in map(json.loads, (b / "metrics.jsonl").read_text().splitlines())
                 if r["kind"] == "step"]
        assert steps == list(range(12))  # no step logged twice, none missing


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path):
    args = ["train", "--hook", HOOK, "--arch", "relu", "--d-sae", "64", "--tokens", str(256 * 40),
            "--batch-size", "256", "--checkpoint-every", "3", "--l1", "1.0", "--eval-tokens", "512",
            "--json"]
    subprocess.run(saescope_cmd(*args, "--out", str(tmp_path / "straight")), check=True, cwd=REPO,
                   capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(saescope_cmd(*args, "--out", str(killed)), cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    for _ in range(14):  # wait until it is past a few checkpoints
        proc.stdout.readline()
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    assert not (killed / "cfg.json").exists() and (killed / "checkpoint").exists()
    r = subprocess.run(saescope_cmd(*args, "--out", str(killed), "--resume"), cwd=REPO,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    a, b = weights(tmp_path / "straight"), weights(killed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_finished_run_loads_in_sae_lens_and_matches_the_training_sae(tmp_path, default_model):
    from sae_lens import SAE

    run = tmp_path / "run"
    cfg = tiny("jumprelu", tokens=256 * 6)
    (result,) = train([cfg], [run], lm=default_model)
    sae = SAE.load_from_disk(str(run))
    assert sae.cfg.metadata.hook_name == HOOK and sae.cfg.d_sae == 64
    assert json.loads((run / "eval.json").read_text()) == json.loads(json.dumps(result))
    for key in ("l0", "mse", "explained_variance", "dead_fraction", "ce_loss_clean", "ce_loss_with_sae",
                "ce_loss_zero_ablation", "ce_loss_score", "kl_div_score"):
        assert isinstance(result[key], float), key
    assert result["ce_loss_zero_ablation"] > result["ce_loss_clean"]
    assert not (run / "checkpoint").exists()


def test_cli_eval_prints_every_required_metric(tmp_path, default_model):
    run = tmp_path / "run"
    train([tiny("relu", tokens=256 * 4)], [run], lm=default_model)
    r = subprocess.run(saescope_cmd("eval", str(run), "--tokens", "1024", "--json"), cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("l0", "mse", "explained_variance", "dead_fraction", "ce_loss_clean", "ce_loss_with_sae",
                "ce_loss_zero_ablation", "ce_loss_score", "kl_div_score"):
        assert key in out


@pytest.mark.parametrize("cfg, needle", [
    (dict(hook="blocks.0.hook_nope"), "does not exist"),
    (dict(k=0), "--k"),
    (dict(k=65), "--k"),
    (dict(d_sae=0), "--d-sae"),
    (dict(arch="gated"), "unknown architecture"),
    (dict(tokens=10), "at least one batch"),
])
def test_bad_settings_are_refused_before_anything_is_written(tmp_path, default_model, cfg, needle):
    with pytest.raises(UserError, match=needle):
        train([tiny(**cfg)], [tmp_path / "run"], lm=default_model)
    assert not (tmp_path / "run" / "checkpoint").exists()


def test_resume_guards(tmp_path, default_model):
    run = tmp_path / "run"
    with pytest.raises(Cancelled):
        train([tiny()], [run], lm=default_model, check=_cancel_after(5))
    with pytest.raises(UserError, match="already holds a run"):
        train([tiny()], [run], lm=default_model)
    with pytest.raises(UserError, match="different configuration.*d_sae"):
        train([tiny(d_sae=128)], [run], lm=default_model, resume=True)
    ckpt = run / "checkpoint" / "sae.safetensors"
    good = ckpt.read_bytes()
    ckpt.write_bytes(good[:100])
    with pytest.raises(UserError, match="corrupt"):
        train([tiny()], [run], lm=default_model, resume=True)
    ckpt.write_bytes(good)  # nothing was lost: the run still resumes and finishes
    train([tiny()], [run], lm=default_model, resume=True)
    assert (run / "cfg.json").exists()
    with pytest.raises(UserError, match="already finished"):
        train([tiny()], [run], lm=default_model, resume=True)


def _cancel_after(n: int):
    calls = {"n": 0}

    def check():
        calls["n"] += 1
        if calls["n"] > n:
            raise Cancelled()
    return check


def test_a_run_stopped_in_its_final_evaluation_resumes_to_the_same_end(tmp_path, default_model, monkeypatch):
    """Killed after the final folder was saved but before `eval.json`: `--resume` finishes
    it, with the same weights and evaluation as a run that was never stopped."""
    import engine.train.loop as loop

    train([tiny()], [tmp_path / "straight"], lm=default_model)
    real = loop._finish
    calls = {"n": 0}

    def evaluate_then_die(*args, **kwargs):
        import engine.train.evaluate as ev

        original = ev.evaluate
        monkeypatch.setattr(ev, "evaluate", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
        try:
            calls["n"] += 1
            return real(*args, **kwargs)
        finally:
            monkeypatch.setattr(ev, "evaluate", original)

    run = tmp_path / "stopped"
    monkeypatch.setattr(loop, "_finish", evaluate_then_die)
    with pytest.raises(KeyboardInterrupt):
        train([tiny()], [run], lm=default_model)
    monkeypatch.setattr(loop, "_finish", real)
    assert calls["n"] == 1 and (run / "cfg.json").exists() and not (run / "eval.json").exists()
    train([tiny()], [run], lm=default_model, resume=True)
    for name, tensor in weights(tmp_path / "straight").items():
        assert torch.equal(weights(run)[name], tensor), name
    a, b = (json.loads((d / "eval.json").read_text()) for d in (tmp_path / "straight", run))
    assert {k: v for k, v in a.items() if k != "sae"} == {k: v for k, v in b.items() if k != "sae"}
    assert not (run / "checkpoint").exists()


def test_cli_train_without_a_terminal_prints_progress_lines(tmp_path):
    r = subprocess.run(saescope_cmd("train", "--hook", HOOK, "--d-sae", "64", "--k", "8", "--tokens", "4096",
                                    "--batch-size", "256", "--eval-tokens", "512", "--out", str(tmp_path / "r")),
                       capture_output=True, text=True, cwd=REPO, timeout=300)
    assert r.returncode == 0, r.stderr
    lines = [line for line in r.stderr.splitlines() if ": step " in line]
    assert lines and lines[-1].startswith("r: step 16/16") and "EV" in lines[-1]
