"""Jobs: every long loop stops within about 2 s of a cancel, reports progress, and
leaves nothing half-written; the CLI shows progress as a bar, plain lines or JSON.

Each cancel test starts the work in a thread (or over the real engine protocol),
waits until it has made progress, cancels, and checks that it stopped soon after
with `Cancelled` before finishing (the workloads take many seconds uncancelled).
"""

from __future__ import annotations

import io
import json
import shutil
import threading
import time

import pytest

from engine.jobs import Cancelled, Job, as_job
from engine.paths import WEIGHTS_DIR
from tests.conftest import run_saescope

SAES = WEIGHTS_DIR / "saes"
UP, DOWN = str(SAES / "resid_mid-topk"), str(SAES / "mlp_out-topk")
LIMIT_S = 2.0  # a cancel must stop the work within this
# long enough that the exact method has hundreds of candidates to ablate one by one
LONG_PROMPT = ("import os\nimport sys\n\n\nclass Reader:\n    def __init__(self, path, mode='r'):\n"
               "        self.path = path\n        self.mode = mode\n        self.lines = []\n\n"
               "    def read(self):\n        with open(self.path, self.mode) as f:\n"
               "            for line in f:\n                self.lines.append(line.rstrip())\n"
               "        return self.lines\n\n\ndef main(argv):\n    reader = Reader(argv[1])\n"
               "    for line in reader.read():\n        print(len(line), line)\n")


class Recorder:
    """A job sink that remembers events and says when real progress (fraction > 0) came."""

    def __init__(self):
        self.events: list[tuple[str, dict]] = []
        self.started = threading.Event()

    def __call__(self, kind: str, data: dict) -> None:
        self.events.append((kind, data))
        if kind == "progress" and data.get("fraction", 0) > 0:
            self.started.set()

    def fractions(self) -> list[float]:
        return [d["fraction"] for k, d in self.events if k == "progress" and "fraction" in d]


def cancel_when_started(work, job: Job, started: threading.Event, wait: float = 60) -> float:
    """Run `work()` in a thread, cancel `job` once `started` is set; the seconds it took to stop."""
    box: dict = {}

    def target():
        try:
            box["result"] = work()
        except BaseException as e:  # noqa: BLE001 - reported below
            box["error"] = e

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    assert started.wait(wait), f"no progress within {wait}s: {box}"
    time.sleep(0.3)  # land anywhere in the work, not just at the check after the first event
    t0 = time.monotonic()
    job.cancel()
    thread.join(30)
    took = time.monotonic() - t0
    assert not thread.is_alive(), "the work did not stop"
    assert "result" not in box, "the work finished before the cancel: make it larger"
    assert isinstance(box.get("error"), Cancelled), box
    assert took < LIMIT_S, f"stopped {took:.2f}s after the cancel"
    print(f"stopped {took:.2f}s after the cancel")
    return took


# ---- the Job object -----------------------------------------------------------------

def test_job_progress_is_throttled_spans_map_and_old_callables_fold_in():
    rec = Recorder()
    job = Job(emit=rec, min_interval=60)
    for i in range(100):
        job.progress(i / 100, "same")
    job.progress(0.5, "other phase")
    job.progress(1.0, "other phase")
    assert rec.fractions() == [0.0, 0.5, 1.0]  # the first, a new message, the last

    rec = Recorder()
    parent = Job(emit=rec, min_interval=0)
    part = parent.span(0.5, 0.75)
    part.progress(0.5, "half", step=1)
    assert rec.events[-1] == ("progress", {"step": 1, "fraction": 0.625, "message": "half"})
    parent.cancel()
    with pytest.raises(Cancelled):
        part.check()  # one cancel flag

    seen, calls = [], []
    legacy = as_job(None, check=lambda: calls.append(1), progress=seen.append)
    legacy.check()
    legacy.progress(0.25, "x")
    assert calls == [1] and seen == [0.25]
    assert as_job(parent) is parent and isinstance(as_job(None), Job)


# ---- one test per kind of long job -------------------------------------------------------

def _fresh_copy(tmp_path, name="mlp_out-topk"):
    dst = tmp_path / name
    shutil.copytree(SAES / name, dst, ignore=shutil.ignore_patterns("index", "metrics.jsonl"))
    return dst


def test_cancel_index_build_writes_nothing(tmp_path, default_model):
    from engine.inspect import SaeView

    sae = _fresh_copy(tmp_path)
    view = SaeView(default_model, sae, index_tokens=1 << 18)  # about a minute uncancelled
    rec = Recorder()
    job = Job(emit=rec)
    cancel_when_started(lambda: view.ensure_index(job=job), job, rec.started)
    assert view.index is None
    assert not (sae / "index").exists() or not any((sae / "index").iterdir())
    assert max(rec.fractions()) < 1.0
    assert all(not p.name.startswith(".") for p in sae.iterdir())  # no temporary files


def test_cancel_eval(default_model):
    from engine.corpus import load_shard
    from engine.saes import check_fits, load_sae
    from engine.train.evaluate import evaluate, sae_reconstructor

    sae = load_sae(DOWN, device=default_model.device)
    windows = load_shard().windows(128, split="held_out", max_tokens=128 * 512)
    rec = Recorder()
    job = Job(emit=rec)
    cancel_when_started(lambda: evaluate(default_model, check_fits(sae, default_model), sae_reconstructor(sae),
                                         windows, sae.cfg.d_sae, batch=8, job=job), job, rec.started)
    assert rec.events[0][1]["message"].startswith("evaluating")


@pytest.fixture(scope="module")
def builder(default_model):
    from engine.ablate import Splice, Target
    from engine.predict import prompt_tokens
    from engine.tree import TreeBuilder, open_sites, token_position

    tokens = prompt_tokens(default_model, LONG_PROMPT)
    position = token_position(tokens, None)
    sites, _ = open_sites(default_model, [UP, DOWN])
    splice = Splice(default_model, sites)
    clean = splice.run(tokens, upto=position)
    metric = Target("logit", position, token=int(clean.logits[position].argmax()))
    splice.batch_bytes = 0  # a pass per candidate: long enough to cancel in the middle
    tb = TreeBuilder(splice, tokens, position, metric, method="exact", top=4)
    assert len(tb.candidates(1)) > 300  # many children to ablate one by one
    return tb


def test_cancel_tree_expansion_exact(builder):
    rec = Recorder()
    job = Job(emit=rec)
    root = {"node": {"kind": "metric"}, "children": None}
    cancel_when_started(lambda: builder.expand_up(root, "exact", job=job), job, rec.started)
    assert root["children"] is None
    progress = [d for k, d in rec.events if k == "progress"]
    assert progress[0]["message"].startswith("ablating") and progress[-1]["total"] > 300


def test_cancel_tree_check(builder):
    rec = Recorder()
    job = Job(emit=rec)
    cancel_when_started(lambda: builder.agreement(builder.metric, 1, job=job), job, rec.started)


def test_cancel_tree_open_handler(default_model, monkeypatch):
    import engine.ablate

    monkeypatch.setattr(engine.ablate.Splice, "batch_bytes", 0)  # a pass per candidate: long enough to cancel
    from engine.workspace import Workspace
    from engine.handlers.trees import tree_open
    from engine.protocol import parse_params

    state = Workspace()
    state.model = default_model
    params = parse_params("tree.open", {"tree": "t", "upstream": UP, "downstream": DOWN,
                                        "prompt": LONG_PROMPT, "method": "exact"})
    rec = Recorder()
    job = Job("r1", "tree.open", emit=rec)
    cancel_when_started(lambda: tree_open(state, params, job), job, rec.started)
    assert "t" not in getattr(state, "tree_roots", {})  # a cancelled open leaves no tree


def test_cancel_uninterpretable_scan(default_model):
    from engine.tree import important_uninterpretable

    rec = Recorder()
    job = Job(emit=rec)
    cancel_when_started(lambda: important_uninterpretable(default_model, [UP, DOWN], LONG_PROMPT,
                                                          method="exact", job=job), job, rec.started)


def test_cancel_training(tmp_path, default_model):
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    cfg = TrainConfig(hook="blocks.0.hook_mlp_out", arch="topk", d_sae=256, k=8, tokens=1024 * 2000,
                      batch_size=1024, checkpoint_every=1000, eval_tokens=128 * 4)
    started = threading.Event()
    job = Job()
    cancel_when_started(lambda: train([cfg], [tmp_path / "run"], lm=default_model, check=job.check,
                                      on_record=lambda i, r: started.set()), job, started)


def test_cancel_training_in_its_final_evaluation(tmp_path, default_model, monkeypatch):
    """A cancel during a run's final evaluation stops it there, writes no `eval.json`,
    and leaves the checkpoint, so `--resume` finishes the run."""
    import engine.train.evaluate as ev
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    cfg = TrainConfig(hook="blocks.0.hook_mlp_out", arch="topk", d_sae=64, k=4, tokens=256 * 20,
                      batch_size=256, checkpoint_every=10, eval_tokens=128 * 256)
    job, started, real = Job(), threading.Event(), ev.evaluate

    def final_evaluation(*args, **kwargs):  # the run's final evaluation has begun
        started.set()
        return real(*args, **kwargs)

    monkeypatch.setattr(ev, "evaluate", final_evaluation)
    run = tmp_path / "run"
    cancel_when_started(lambda: train([cfg], [run], lm=default_model, check=job.check), job, started)
    assert (run / "cfg.json").exists() and not (run / "eval.json").exists() and (run / "checkpoint").exists()
    monkeypatch.setattr(ev, "evaluate", real)
    train([cfg], [run], lm=default_model, resume=True)
    assert (run / "eval.json").exists() and not (run / "checkpoint").exists()


def test_uninterpretable_scan_reports_progress_to_the_end(default_model):
    """Uncancelled, the scan's progress reaches 1 and its result has both lists."""
    from engine.tree import important_uninterpretable

    rec = Recorder()
    result = important_uninterpretable(default_model, [UP, DOWN], "def __init__(self, name):",
                                       method="attribution", n=5, job=Job(emit=rec))
    assert rec.fractions()[-1] == 1.0 and rec.fractions() == sorted(rec.fractions())
    assert len(result["most_important"]) == 5


# ---- over the real protocol: sae.open builds an index, cancel stops it ----------------------

def test_protocol_cancel_of_an_index_build_and_the_job_list(tmp_path):
    from tests.engine.engine_proc import EngineProcess

    sae = _fresh_copy(tmp_path)
    engine = EngineProcess()
    try:
        engine.request("load", "model.load", spec="default")
        assert engine.reply("load", timeout=120)[0]["status"] == "ok"
        engine.request("open", "sae.open", path=str(sae), tokens=1 << 18)
        first, _ = engine.until(lambda m: m["type"] == "event" and m["id"] == "open"
                                and m["data"].get("fraction", 0) > 0, timeout=60)
        assert first["kind"] == "progress" and first["data"]["message"].startswith("indexing")
        engine.request("j1", "jobs")
        listed, _ = engine.reply("j1")
        assert [j["id"] for j in listed["result"]["jobs"]] == ["open"]
        t0 = time.monotonic()
        engine.request("stop", "cancel", target="open")
        reply, _ = engine.reply("open", timeout=30)
        took = time.monotonic() - t0
        assert reply["status"] == "cancelled" and took < LIMIT_S, (reply, took)
        engine.request("j2", "jobs")
        assert engine.reply("j2")[0]["result"]["jobs"] == []
        assert not (sae / "index").exists() or not any((sae / "index").iterdir())
    finally:
        engine.close()


def test_a_failing_worker_sends_a_log_event_then_an_error_reply(monkeypatch):
    """In-process session: an unexpected exception is a log event with its message, an
    error reply, and the job is off the job list."""
    from engine.handlers import HANDLERS
    from engine.workspace import Workspace
    from engine.server import Session

    def boom(state, params, ctx):
        ctx.progress(0.1, "working")
        raise RuntimeError("the disk caught fire")

    monkeypatch.setitem(HANDLERS, "sleep", boom)
    out = io.BytesIO()
    request = {"type": "request", "id": "x", "method": "sleep", "params": {}}
    session = Session(Workspace(), io.BytesIO(json.dumps(request).encode() + b"\n"), out)
    session.run()  # reads to the end, then waits for the job
    msgs = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [m["type"] for m in msgs] == ["hello", "event", "event", "reply"]
    assert msgs[2]["kind"] == "log" and "the disk caught fire" in msgs[2]["data"]["message"]
    assert msgs[3]["status"] == "error" and "the disk caught fire" in msgs[3]["error"]
    assert session.jobs == {}


# ---- the CLI ----------------------------------------------------------------------------

def test_cli_progress_sink_plain_and_json_lines():
    from engine.cli_progress import CliProgress, pick_mode

    assert pick_mode(False, io.StringIO()) == "plain" and pick_mode(True, io.StringIO()) == "json"
    plain = io.StringIO()
    sink = CliProgress("plain", plain, every=60)
    job = sink.job()
    job.min_interval = 0
    for i in range(50):
        job.progress(i / 50, "indexing 1,000 tokens", step=i, total=50)
    job.log("a line to keep")
    job.progress(1.0, "indexing 1,000 tokens", step=50, total=50)
    lines = plain.getvalue().splitlines()
    assert lines[0].startswith("indexing 1,000 tokens  0%  (0/50)")
    assert lines[1] == "a line to keep" and lines[2].startswith("indexing 1,000 tokens  100%  (50/50)")
    assert len(lines) == 3  # throttled: not one line per step

    js = io.StringIO()
    job = CliProgress("json", js).job()
    job.progress(0.5, "half", step=1, total=2)
    job.log("hello")
    events = [json.loads(line) for line in js.getvalue().splitlines()]
    assert events[0]["event"] == "progress" and events[0]["fraction"] == 0.5 and events[0]["message"] == "half"
    assert events[1] == {"event": "log", "message": "hello", "elapsed": events[1]["elapsed"]}


def test_cli_index_json_events_and_plain_lines_without_a_terminal(tmp_path):
    sae = _fresh_copy(tmp_path)
    r = run_saescope("index", str(sae), "--tokens", str(1 << 13), "--json")
    assert r.returncode == 0, r.stderr
    events = [json.loads(line) for line in r.stderr.splitlines() if line.strip()]
    assert events and all(e["event"] == "progress" for e in events)
    assert events[0]["fraction"] == 0.0 and events[-1]["fraction"] == 1.0
    result = json.loads(r.stdout)
    assert result["alive"] > 0 and result["tokens"] > 0

    # no terminal, no --json (a pipe): plain progress lines, no bar, no escapes
    r = run_saescope("index", str(sae), "--tokens", str(1 << 13), "--rebuild")
    assert r.returncode == 0, r.stderr
    lines = r.stderr.splitlines()
    assert lines[0].startswith("indexing ") and "  0%" in lines[0]
    assert any("100%" in line for line in lines) and "ready in" in lines[-1]
    assert "\x1b" not in r.stderr and "━" not in r.stderr
