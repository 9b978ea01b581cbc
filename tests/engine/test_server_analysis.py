"""Training, inspection and ablation requests through a real engine process."""

from __future__ import annotations

import pytest

from tests.conftest import REPO
from tests.engine.engine_proc import EngineProcess
from tests.engine.test_inspect import make_sae

MID, OUT = "blocks.0.hook_resid_mid", "blocks.0.hook_mlp_out"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("srv")
    up, down = make_sae(root / "up", hook=MID, d_sae=64, seed=1), make_sae(root / "down", hook=OUT, d_sae=64, seed=2)
    engine = EngineProcess()
    engine.request("load", "model.load")
    assert engine.reply("load", timeout=120)[0]["status"] == "ok"
    yield engine, root, str(up), str(down)
    engine.close()


def ok(engine, rid, method_name, /, timeout=120, **params):
    engine.request(rid, method_name, **params)
    reply, events = engine.reply(rid, timeout=timeout)
    assert reply["status"] == "ok", reply
    return reply["result"], events


def test_open_an_sae_and_read_feature_pages(setup):
    engine, _, up, _ = setup
    result, events = ok(engine, "open", "sae.open", path=up, tokens=128 * 16)
    assert result["indexed"] and result["d_sae"] == 64 and result["hook"] == MID
    assert events and events[-1]["data"]["fraction"] == 1.0
    f = ok(engine, "dense", "feature.search", path=up, kind="densest", n=1)[0]["results"][0]["feature"]
    page, _ = ok(engine, "page", "feature.page", path=up, feature=f, top=3)
    assert page["feature"] == f and len(page["examples"]) == 3
    live, _ = ok(engine, "live", "feature.live", path=up, text="def f(x):")
    assert live["tokens"][0] == "def"
    engine.request("bad", "feature.page", path=up, feature=64)
    assert "out of range" in engine.reply("bad")[0]["error"]
    engine.request("closed", "feature.page", path="/nowhere", feature=1)
    assert "not open" in engine.reply("closed")[0]["error"]


def test_ablation_tree_requests(setup):
    engine, _, up, down = setup
    ok(engine, "iu", "sae.open", path=up, tokens=128 * 16)
    ok(engine, "id", "sae.open", path=down, tokens=128 * 16)
    opened, _ = ok(engine, "t1", "tree.open", tree="t", upstream=up, downstream=down,
                   prompt="def __init__(self, name):", top=4)
    root = opened["root"]
    assert root["node"]["kind"] == "metric" and len(root["children"]) == 4
    features = [i for i, c in enumerate(root["children"]) if c["node"]["kind"] == "feature"]
    expanded, _ = ok(engine, "t2", "tree.expand", tree="t", path=[features[0]], method="exact")
    assert all(c["method"] == "exact" for c in expanded["children"])
    check, _ = ok(engine, "t3", "tree.check", tree="t", path=[])
    assert check["n"] >= 1 and "spearman" in check
    feature = next(c["node"]["feature"] for c in expanded["children"] if c["node"]["kind"] == "feature")
    down_tree, _ = ok(engine, "t4", "tree.ablate", tree="t", site=0, features=[feature])
    assert down_tree["root"]["node"]["direction"] == "down"
    for rid, params, needle in (
        ("b1", dict(tree="t", upstream=down, downstream=up, prompt="x = 1"), "model order"),
        ("b2", dict(tree="t", upstream=up, downstream=down, prompt="x = 1", position=40), "beyond the prompt"),
        ("b3", dict(tree="t", upstream=up, downstream=down, prompt=""), "empty"),
    ):
        engine.request(rid, "tree.open", **params)
        assert needle in engine.reply(rid)[0]["error"]
    engine.request("b4", "tree.ablate", tree="t", site=0, features=[999])
    assert "out of range" in engine.reply("b4")[0]["error"]


def test_train_streams_metrics_reads_back_and_cancels(setup):
    engine, root, _, _ = setup
    run = dict(hook=OUT, arch="topk", d_sae=32, k=4, tokens=256 * 6, batch_size=256, eval_tokens=512,
               out=str(root / "run"))
    result, events = ok(engine, "tr", "train.start", runs=[run], timeout=300)
    metrics = [e for e in events if e["kind"] == "metrics"]
    assert metrics and metrics[-1]["data"]["record"]["step"] == 5
    assert result["runs"][0]["l0"] > 0
    replay, _ = ok(engine, "rd", "train.read", path=str(root / "run"))
    assert [r["step"] for r in replay["records"] if r["kind"] == "step"] == list(range(6))
    assert replay["eval"]["ce_loss_score"] == result["runs"][0]["ce_loss_score"]
    long_run = {**run, "tokens": 256 * 2000, "out": str(root / "long")}
    engine.request("tl", "train.start", runs=[long_run])
    engine.until(lambda m: m.get("id") == "tl" and m["type"] == "event" and m["kind"] == "metrics", timeout=120)
    ok(engine, "ping-while-training", "ping", timeout=5)
    ok(engine, "stop", "cancel", target="tl")
    reply, _ = engine.reply("tl", timeout=60)
    assert reply["status"] == "cancelled"
    assert (root / "long" / "checkpoint" / "position.json").exists()
    # One word for it in the run files: stopped, checkpointed, resumable.
    import json

    state = json.loads((root / "long" / "state.json").read_text())
    assert state["state"] == "stopped" and state["message"] == "stopped (checkpointed): resume continues it"

    # A folder that holds a run: one whole sentence, in words (the app has no flags).
    for rid, folder, needle in (("again", "run", "already holds a finished run: choose another folder"),
                                ("again2", "long", "already holds a run: resume it, or choose another folder")):
        engine.request(rid, "train.start", runs=[{**run, "out": str(root / folder)}])
        reply, _ = engine.reply(rid)
        assert reply["status"] == "error" and reply["error"] == f"{root / folder} {needle}"

    # The runs of a folder: itself, or its sub-folders that hold runs (side by side).
    scan, _ = ok(engine, "scan", "train.scan", path=str(root) + "/")
    assert scan["runs"] == [f"{root}/long", f"{root}/run"]
    assert ok(engine, "scan1", "train.scan", path=str(root / "run"))[0]["runs"] == [str(root / "run")]
    engine.request("scan2", "train.scan", path=str(root / "up"))
    assert engine.reply("scan2")[0]["error"] == f"{root / 'up'} holds no training run (no saescope.json in it or in its sub-folders)"


def test_bad_corpus_and_context_are_error_replies(setup, tmp_path):
    """A corpus of another tokenizer and a context longer than the model's: error replies,
    and the engine keeps serving."""
    import json
    import shutil

    from engine.paths import CORPUS_DIR

    engine, _, up, _ = setup
    engine.request("long", "sae.open", path=up, context=4096)
    assert "longer than the model's context" in engine.reply("long")[0]["error"]
    other = tmp_path / "other-shard"
    shutil.copytree(CORPUS_DIR, other)
    meta = json.loads((other / "documents.json").read_text())
    meta.update(tokenizer_hash="0" * 40, identity="shard:other")  # as a shard made for another model
    (other / "documents.json").write_text(json.dumps(meta))
    engine.request("other", "sae.open", path=up, corpus=str(other))
    assert "another tokenizer" in engine.reply("other")[0]["error"]
    ok(engine, "alive", "ping")


def test_circuit_requests(setup, tmp_path):
    engine, _, up, down = setup
    small = tmp_path / "was_were_12.jsonl"  # the shipped task's first 12 pairs: the protocol, not the figures
    small.write_text("".join((REPO / "weights/tasks/was_were.jsonl").read_text().splitlines(True)[:12]))
    found, events = ok(engine, "c1", "circuit.find", circuit="c", task=str(small), saes=[up, down], points=4,
                       max_nodes=40, timeout=300)
    assert events and found["nodes"] and found["curve"] and found["complete"]
    assert found["figures"]["nodes"] == len(found["nodes"])
    lower = min(n["effect"] ** 2 for n in found["nodes"]) ** 0.5 / 2
    wider, _ = ok(engine, "c2", "circuit.threshold", circuit="c", threshold=lower, errors=False)
    assert not any(n.get("feature") is None for n in wider["nodes"])
    checked, _ = ok(engine, "c3", "circuit.verify", circuit="c", nodes=[found["nodes"][0]["id"]],
                    edges=[[found["edges"][0]["source"], found["edges"][0]["target"]]])
    assert len(checked["nodes"]) == 1 and len(checked["edges"]) == 1
    bad_task = tmp_path / "bad.jsonl"
    bad_task.write_text('{"clean": "a b", "patch": "a b c", "clean_answer": " x", "patch_answer": " y"}\n')
    for rid, method, params, needle in [
        ("cb1", "circuit.find", {"task": str(bad_task), "saes": [up, down]}, "same token length"),
        ("cb2", "circuit.find", {"task": "was_were", "saes": [down, up]}, "model order"),
        ("cb3", "circuit.threshold", {"circuit": "nope", "threshold": 0.1}, "no open circuit"),
        ("cb4", "circuit.threshold", {"circuit": "c", "threshold": 1e9}, "keeps no node"),
        ("cb5", "circuit.verify", {"circuit": "c", "nodes": ["nowhere/1"]}, "no node"),
        ("cb6", "circuit.find", {"task": "was_were", "saes": [str(REPO / "weights/saes/smollm2-resid_post-l3")]},
         "made for the model"),
    ]:
        engine.request(rid, method, **params)
        assert needle in engine.reply(rid, timeout=120)[0]["error"]
    assert ok(engine, "circuit-alive", "ping")[0]  # request ids are the module's own: a reused one is refused
