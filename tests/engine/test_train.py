"""SAE training on the default model: resume exactness, the saved format, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
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
    for name in ("sae_weights.safetensors", "sparsity.safetensors", "cfg.json"):  # readable by others, like any file
        assert (straight[0] / name).stat().st_mode & 0o777 == 0o644, name

    logged = set()

    def cancel_at_step_7():  # asked before step 7 (and between model passes)
        if 6 in logged:
            raise Cancelled()

    resumed = [tmp_path / "b" / c.arch for c in cfgs]
    with pytest.raises(Cancelled):
        train(cfgs, resumed, lm=default_model, check=cancel_at_step_7,
              on_record=lambda i, rec: logged.add(rec["step"]) if rec["kind"] == "step" else None)
    assert json.loads((resumed[0] / "checkpoint" / "position.json").read_text())["step"] == 7
    # what a kill in the middle of a snapshot's write leaves: the resume removes it
    (resumed[0] / "snapshots" / ".snapshot.left-by-a-kill").write_bytes(b"partial")
    train(cfgs, resumed, lm=default_model, resume=True)
    assert not [p.name for p in (resumed[0] / "snapshots").iterdir() if p.name.startswith(".")]
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
    """A real kill -9 of the CLI mid-run, with the fast sparse TopK step: the resumed run
    ends bit-identical to one never stopped, its decoder snapshots included."""
    args = ["train", "--hook", HOOK, "--arch", "topk", "--k", "8", "--d-sae", "64", "--tokens", str(256 * 40),
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
    snapshots = sorted(p.name for p in (killed / "snapshots").iterdir())
    assert len(snapshots) > 10 and snapshots == sorted(p.name for p in (tmp_path / "straight" / "snapshots").iterdir())
    for name in snapshots:
        assert (killed / "snapshots" / name).read_bytes() == (tmp_path / "straight" / "snapshots" / name).read_bytes()


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
        train([tiny()], [run], lm=default_model, **_cancel_after(5))
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


def _cancel_after(n: int) -> dict:
    """`train` arguments that stop a run once `n` steps are logged (check() is asked
    before each step, and between model passes too)."""
    logged = set()

    def check():
        if len(logged) >= n:
            raise Cancelled()
    return {"check": check, "on_record": lambda i, rec: logged.add(rec["step"]) if rec["kind"] == "step" else None}


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


def test_the_saved_sae_is_the_trained_one(tmp_path, default_model, monkeypatch):
    """The sae_lens folder, loaded by sae_lens itself, computes what the training SAE
    computed (on raw activations: the input scale is folded in) - for each architecture
    whose inference form is the training form."""
    import copy

    from sae_lens import SAE

    import engine.train.loop as loop

    real, trained = loop._finish, {}

    def keep_a_copy(r, lm, *args, **kwargs):
        trained[r.cfg.arch] = (copy.deepcopy(r.sae).eval(), r.scale)
        return real(r, lm, *args, **kwargs)

    monkeypatch.setattr(loop, "_finish", keep_a_copy)
    cfgs = [tiny("topk", tokens=256 * 6), tiny("relu", tokens=256 * 6), tiny("jumprelu", tokens=256 * 6)]
    dirs = [tmp_path / c.arch for c in cfgs]
    train(cfgs, dirs, lm=default_model)
    x = default_model.model.run_with_cache(torch.randint(1, 100, (2, 32)), names_filter=HOOK)[1][HOOK]
    x = x.reshape(-1, x.shape[-1]).float().cpu()
    for cfg, folder in zip(cfgs, dirs):
        sae, scale = trained[cfg.arch]
        sae = sae.cpu()
        loaded = SAE.load_from_disk(str(folder), device="cpu")
        assert loaded.cfg.d_sae == cfg.d_sae and loaded.cfg.metadata.hook_name == HOOK
        with torch.no_grad():
            want_acts = sae.encode(x * scale)
            got_acts = loaded.encode(x)
            want = sae.decode(want_acts) / scale
            got = loaded.decode(got_acts)
        assert torch.equal(want_acts != 0, got_acts != 0), cfg.arch  # the same features fire
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5, msg=cfg.arch)
        state = json.loads((folder / "state.json").read_text())
        assert state["state"] == "finished" and "pid" not in state


def test_cli_train_stopped_with_ctrl_c_says_stopped_and_resumes(tmp_path):
    """ctrl+c: the run stops, checkpointed, in the same words as the app and the run
    files ("stopped"), and the line says how to continue."""
    out = tmp_path / "r"
    args = ("train", "--hook", HOOK, "--d-sae", "64", "--k", "8", "--tokens", str(256 * 400), "--batch-size",
            "256", "--eval-tokens", "512", "--checkpoint-every", "2", "--out", str(out))
    proc = subprocess.Popen(saescope_cmd(*args), stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True,
                            cwd=REPO, env={**os.environ, "SAESCOPE_TEST_STEP_DELAY": "0.05"})
    try:
        for line in proc.stderr:  # without a terminal: a plain line at the first step
            if ": step " in line:
                break
        while (json.loads((out / "state.json").read_text()) if (out / "state.json").exists() else {}).get(
                "state") != "running":
            time.sleep(0.05)
        deadline = time.time() + 60  # past a checkpoint, however slowly the steps go on a busy machine
        while not (out / "checkpoint" / "position.json").exists():
            assert time.time() < deadline, "no checkpoint within a minute"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        rest = proc.stderr.read()
        assert proc.wait(60) == 130, rest
    finally:
        proc.kill()
    last = rest.strip().splitlines()[-1]
    assert last.startswith("saescope: stopped at step ") and last.endswith(
        "(checkpointed): the same command with --resume continues it"), rest
    assert "Traceback" not in rest and "Aborted" not in rest
    state = json.loads((out / "state.json").read_text())
    assert state["state"] == "stopped" and "paus" not in rest + state["message"]
    assert (out / "checkpoint" / "position.json").exists()


def test_resuming_a_folder_that_is_not_a_run_is_one_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    for out in (tmp_path / "empty", tmp_path / "missing"):
        r = subprocess.run(saescope_cmd("train", "--hook", HOOK, "--d-sae", "64", "--tokens", "4096",
                                        "--batch-size", "256", "--out", str(out), "--resume"),
                           capture_output=True, text=True, cwd=REPO, timeout=300)
        assert r.returncode == 2, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and "cannot resume" in lines[0] and "Traceback" not in r.stderr, r.stderr


# ---- kills at many points -------------------------------------------------------------
KILL_CFG = dict(arch="relu", tokens=256 * 8, checkpoint_every=2)  # saves after steps 2, 4, 6, 8


def _expected_checkpoint(point: str, n: int, steps_logged: int) -> int | None:
    """The step a resume must continue from after a kill at the n-th `point`: the last
    complete checkpoint (the swap's new one once its old one was moved away)."""
    if point == "save-writing":
        return 2 * (n - 1) or None
    if point == "save-written":  # the new one is complete: used when there is no other
        return 2 * (n - 1) or 2
    if point in ("save-swapping", "save-swapped"):
        return 2 * n
    if point == "step-logged":  # the n-th step's line is written before its checkpoint
        return 2 * ((n - 1) // 2) or None
    return 8  # the final save and evaluation: the last checkpoint is kept until the end


KEEP = {"save-writing": (1, 2), "save-written": (1, 2), "save-swapping": (1, 2, 4), "save-swapped": (2,),
        "step-logged": (2, 5), "final-saving": (2,), "final-saved": (1,), "final-evaluated": (1,)}


@pytest.mark.slow
def test_no_kill_makes_a_run_restart_from_step_0(tmp_path, default_model, monkeypatch):
    """The run folder as a kill leaves it at every phase of every checkpoint save (before,
    inside and after the swap), after every step's metrics line, and in the final save
    and evaluation: `--resume` continues from the last complete checkpoint (never step 0
    once one existed) and ends with the weights of a run that was never stopped.

    The folder is copied at each point in-process (every write before it is complete:
    metrics lines are flushed, the rest is written whole), which is what a SIGKILL there
    would leave; `test_a_sigkill_in_the_checkpoint_swap_resumes_from_the_new_checkpoint`
    kills for real."""
    import collections
    import shutil

    from engine.corpus import corpus_for
    from engine.train import checkpoint as ckpt

    cfg = tiny(**KILL_CFG)
    text = corpus_for(None, default_model)
    straight = tmp_path / "straight"
    train([cfg], [straight], lm=default_model, corpus=text)
    run = tmp_path / "run"
    seen: collections.Counter = collections.Counter()
    snaps = []

    def snapshot(point: str) -> None:
        seen[point] += 1
        if seen[point] not in KEEP.get(point, (1, 2, 3, 4)):
            return
        snap = tmp_path / f"{point}-{seen[point]}"
        shutil.copytree(run, snap, symlinks=True)
        snaps.append((point, seen[point], seen["step-logged"], snap))

    monkeypatch.setattr(ckpt, "on_kill_point", snapshot)
    train([cfg], [run], lm=default_model, corpus=text)
    monkeypatch.setattr(ckpt, "on_kill_point", None)
    assert {p for p, *_ in snaps} >= {"save-writing", "save-written", "save-swapping", "save-swapped",
                                      "step-logged", "final-saving", "final-saved", "final-evaluated",
                                      "checkpoint-removing"}
    for point, n, logged, snap in snaps:
        want = _expected_checkpoint(point, n, logged)
        what = f"{point}:{n}"
        if (snap / "eval.json").exists():  # it had finished
            with pytest.raises(UserError, match="already finished"):
                train([cfg], [snap], lm=default_model, corpus=text, resume=True)
        else:
            said = []
            train([cfg], [snap], lm=default_model, corpus=text, resume=True, log=said.append)
            resumed = [int(m.rsplit(" ", 1)[1]) for m in said if "resuming from step" in m]
            assert resumed == ([want] if want else []), (what, said)
            steps = [r["step"] for r in map(json.loads, (snap / "metrics.jsonl").read_text().splitlines())
                     if r["kind"] == "step"]
            assert steps == list(range(8)), what
            assert not (snap / "checkpoint").exists(), what
        for k, v in weights(straight).items():
            assert torch.equal(weights(snap)[k], v), (what, k)


_KILL_SCRIPT = """
import json, sys
from pathlib import Path
from engine.train.config import TrainConfig
from engine.train.loop import train
train([TrainConfig.from_dict(json.loads(sys.argv[1]))], [Path(sys.argv[2])])
"""


@pytest.mark.slow
def test_a_sigkill_in_the_checkpoint_swap_resumes_from_the_new_checkpoint(tmp_path, default_model):
    """A real SIGKILL between the two renames of a checkpoint swap (no `checkpoint`
    folder at that instant): the resume continues from the new checkpoint, not step 0."""
    from engine.train import checkpoint as ckpt

    cfg = tiny(**KILL_CFG)
    run = tmp_path / "run"
    r = subprocess.run([sys.executable, "-c", _KILL_SCRIPT, json.dumps(cfg.as_dict()), str(run)], cwd=REPO,
                       env={**os.environ, ckpt.KILL_ENV: "save-swapping:2"}, capture_output=True, timeout=300)
    assert r.returncode == -signal.SIGKILL, r.stderr.decode()[-2000:]
    assert not (run / "checkpoint").exists()  # the window itself
    said = []
    train([cfg], [run], lm=default_model, resume=True, log=said.append)
    assert any(m.endswith("resuming from step 4") for m in said), said
    straight = tmp_path / "straight"
    train([cfg], [straight], lm=default_model)
    for k, v in weights(straight).items():
        assert torch.equal(weights(run)[k], v), k


# ---- training that outlives the engine -------------------------------------------------
def _metrics_steps(events: list[dict], run: int = 0) -> list[int]:
    return [m["data"]["record"]["step"] for m in events
            if m.get("type") == "event" and m["kind"] == "metrics" and m["data"]["run"] == run
            and m["data"]["record"]["kind"] == "step"]


@pytest.mark.slow
def test_a_run_outlives_its_engine_and_a_new_engine_follows_it(tmp_path, monkeypatch):
    """The engine killed (SIGKILL) and another one's input closed: the training process
    goes on; a new engine lists it and follows it to its end, curves from step 0.
    A training process killed with SIGKILL is `failed` and resumable, and resumes.
    A resume of a folder that is not a run is one error reply, and the engine goes on."""
    from tests.engine.engine_proc import EngineProcess

    monkeypatch.setenv("SAESCOPE_RUNS", str(tmp_path / "registry"))  # this test's runs only
    out = tmp_path / "run"
    settings = dict(hook=HOOK, d_sae=32, k=4, tokens=256 * 300, batch_size=256, eval_tokens=512,
                    checkpoint_every=25, out=str(out))
    first = EngineProcess()
    try:
        first.request("r", "train.start", resume=True, runs=[{**settings, "out": str(tmp_path / "nothing")}])
        reply, _ = first.reply("r")
        assert reply["status"] == "error" and "cannot resume" in reply["error"]
        first.request("t", "train.start", runs=[settings])
        first.until(lambda m: m.get("kind") == "metrics", 180)
        first.request("l", "train.list")
        (job,) = first.reply("l")[0]["result"]["jobs"]
        pid = job["state"]["pid"]
        assert job["state"]["state"] == "running" and job["runs"][0]["path"] == str(out)
    finally:
        first.proc.kill()  # no goodbye: as when its SSH transport dies
        first.proc.wait(10)
    time.sleep(1.0)
    assert _going_on(pid, out), "the training process died with its engine"

    second = EngineProcess()
    second.request("f", "train.follow", out=str(out))
    second.until(lambda m: m.get("kind") == "metrics", 60)
    assert second.close() == 0  # end of input: the follow ends, the run goes on
    assert _going_on(pid, out)

    third = EngineProcess()
    try:
        third.request("l", "train.list")
        (job2,) = third.reply("l")[0]["result"]["jobs"]
        assert job2["job"] == job["job"] and job2["state"]["state"] in ("running", "finished")
        third.request("f", "train.follow", job=job["job"])
        reply, seen = third.reply("f", 300)
        assert reply["status"] == "ok", reply
        assert reply["result"]["job"] == job["job"] and reply["result"]["runs"][0]["sae"] == str(out)
        steps = _metrics_steps(seen)
        assert steps[0] == 0 and steps[-1] == 299 and steps == sorted(steps)  # replayed from the start
        assert json.loads((out / "state.json").read_text())["state"] == "finished"

        # kill -9 of the training process: failed, resumable; the resume finishes it
        killed = tmp_path / "killed"
        third.request("t", "train.start", runs=[{**settings, "out": str(killed)}])
        third.until(lambda m: m.get("kind") == "metrics" and m["data"]["record"]["step"] >= 30, 180)
        state = json.loads((killed / "state.json").read_text())
        os.kill(state["pid"], signal.SIGKILL)
        reply, _ = third.reply("t", 30)
        assert reply["status"] == "error" and "died" in reply["error"] and "resume" in reply["error"]
        third.request("r", "train.read", path=str(killed))
        read = third.reply("r")[0]["result"]
        assert read["state"]["state"] == "failed" and read["state"]["resumable"]
        assert read["state"]["checkpoint"] >= 25
        third.request("s", "train.start", resume=True, runs=[{"out": str(killed)}])
        deadline = time.monotonic() + 180
        while (json.loads((killed / "state.json").read_text()).get("pid") in (None, state["pid"])
               and time.monotonic() < deadline):  # the new process at work
            time.sleep(0.2)
        third.request("stop", "train.stop", out=str(killed))
        assert third.reply("stop")[0]["status"] == "ok"
        reply, _ = third.reply("s", 60)
        assert reply["status"] == "cancelled"  # stopped, checkpointed
        assert json.loads((killed / "state.json").read_text())["state"] == "stopped"
        assert (killed / "checkpoint" / "position.json").exists()
        third.request("p", "ping")
        assert third.reply("p")[0]["status"] == "ok"
    finally:
        third.close()


def _going_on(pid: int, out: Path) -> bool:
    """The training process is still at work, or has already finished its run (a short
    run on a quiet machine can end while a new engine starts): not stopped, not dead."""
    if _alive(pid):
        return True
    state = json.loads((out / "state.json").read_text())
    return state["state"] == "finished"


def _alive(pid: int) -> bool:
    from engine.train.detached import pid_alive

    return pid_alive(pid)
