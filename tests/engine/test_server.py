"""The engine process and its protocol: a real subprocess, real pipes, real sockets."""

from __future__ import annotations

import json
import socket
import subprocess
import time

import pytest

from tests.conftest import REPO, saescope_cmd
from tests.engine.engine_proc import EngineProcess


@pytest.fixture(scope="module")
def engine():
    proc = EngineProcess()
    yield proc
    proc.close()


def test_hello_comes_first(engine):
    h = engine.hello
    assert h["type"] == "hello" and h["protocol"] == 1 and h["auth"] == "none"
    assert {"ping", "predict", "model.load", "cancel", "sleep"} <= set(h["capabilities"])


def test_ping_and_model_load_and_predict(engine):
    engine.request("p1", "ping")
    reply, events = engine.reply("p1")
    assert reply["status"] == "ok" and reply["result"]["pong"] is True and events == []
    engine.request("m1", "model.load", spec="default")
    reply, events = engine.reply("m1", timeout=120)
    assert reply["status"] == "ok" and reply["result"]["name"] == "mini-gelu-1l"
    assert [e["kind"] for e in events] == ["progress", "progress"]
    engine.request("q1", "predict", text="def __init__(self", top=3)
    reply, _ = engine.reply("q1")
    assert reply["status"] == "ok" and len(reply["result"]["top"]) == 3


@pytest.mark.parametrize("line, needle", [
    (b"not json at all", "not a valid message"),
    (b"{}", "not a valid message"),
    (b'{"type": "request"}', "not a valid message"),  # missing id and method
    (b'{"type": "request", "id": 5, "method": "ping"}', "not a valid message"),  # id must be a string
    (b'{"type": "reply", "id": "x", "status": "ok"}', "takes requests"),
    (b"[1, 2, 3]", "not a valid message"),
    (b"\xff\xfe\x00garbage", "not a valid message"),
])
def test_malformed_lines_get_an_error_and_the_engine_keeps_serving(engine, line, needle):
    engine.send_raw(line + b"\n")
    msg = engine.next()
    assert msg["type"] == "error" and needle in msg["message"]
    rid = f"alive-{abs(hash(line))}"
    engine.request(rid, "ping")
    assert engine.reply(rid)[0]["status"] == "ok"


def test_unknown_method_and_bad_params_are_error_replies(engine):
    engine.request("u1", "no.such.method")
    r, _ = engine.reply("u1")
    assert r["status"] == "error" and "unknown method" in r["error"]
    engine.request("u2", "predict")  # missing text
    r, _ = engine.reply("u2")
    assert r["status"] == "error" and "text" in r["error"]
    engine.request("u3", "predict", text=123)  # wrong type
    r, _ = engine.reply("u3")
    assert r["status"] == "error" and "str" in r["error"]
    engine.request("u4", "predict", text="hi", bogus=1)  # unknown field
    r, _ = engine.reply("u4")
    assert r["status"] == "error" and "bogus" in r["error"]
    engine.request("u5", "predict", text="")
    r, _ = engine.reply("u5")
    assert r["status"] == "error" and "empty" in r["error"]


def test_huge_line_is_refused_and_skipped(engine):
    engine.send_raw(b'{"type": "request", "id": "huge", "method": "ping", "params": {"x": "'
                    + b"a" * (2 << 20) + b'"}}\n')
    msg = engine.next()
    assert msg["type"] == "error" and "longer than" in msg["message"]
    engine.request("after-huge", "ping")
    assert engine.reply("after-huge")[0]["status"] == "ok"


def test_reused_id_gets_an_error_not_a_second_reply(engine):
    engine.request("dup", "ping")
    assert engine.reply("dup")[0]["status"] == "ok"
    engine.request("dup", "ping")
    msg = engine.next()
    assert msg["type"] == "error" and msg["id"] == "dup" and "already used" in msg["message"]


def test_cancel_of_a_job_that_is_not_running(engine):
    engine.request("c0", "cancel", target="never-started")
    r, _ = engine.reply("c0")
    assert r["status"] == "error" and "no running job" in r["error"]


def test_job_streams_progress_answers_ping_meanwhile_and_cancels(engine):
    engine.request("job", "sleep", seconds=30, steps=300)
    first, _ = engine.until(lambda m: m["type"] == "event" and m["id"] == "job")
    assert first["kind"] == "progress"
    t0 = time.time()
    engine.request("ping-during-job", "ping")
    engine.reply("ping-during-job")
    assert time.time() - t0 < 2.0  # short requests do not wait for the job
    engine.request("list", "jobs")
    jobs, _ = engine.reply("list")
    assert [j["id"] for j in jobs["result"]["jobs"]] == ["job"]
    engine.request("stop", "cancel", target="job")
    assert engine.reply("stop")[0]["status"] == "ok"
    r, events = engine.reply("job", timeout=10)
    assert r["status"] == "cancelled"
    assert all(e["type"] == "event" for e in events)


def test_a_failed_job_is_an_error_reply_and_listed_as_failed(engine):
    engine.request("bad", "sleep", seconds=-1)
    r, _ = engine.reply("bad")
    assert r["status"] == "error" and "0 <= seconds" in r["error"]
    engine.request("list2", "jobs")
    listed = engine.reply("list2")[0]["result"]
    failed = [j for j in listed["ended"] if j["id"] == "bad"]
    assert failed and failed[0]["status"] == "error" and "0 <= seconds" in failed[0]["error"]
    assert all(j["id"] != "bad" for j in listed["jobs"])


def test_stdout_carries_only_protocol_and_eof_exits_cleanly():
    proc = EngineProcess()
    proc.request("m", "model.load", spec="default")
    proc.reply("m", timeout=120)
    proc.request("s", "sleep", seconds=60, steps=60)  # still running at EOF
    proc.next()
    assert proc.close() == 0
    for raw in proc.raw:  # every line parses and has a known type
        assert json.loads(raw)["type"] in {"hello", "event", "reply", "error"}


def _tcp_engine(token: str):
    proc = subprocess.Popen(saescope_cmd("engine", "serve", "--listen", "127.0.0.1:0", "--token", token),
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            cwd=REPO, text=True)
    for line in proc.stderr:
        if "listening on" in line:
            port = int(line.split("listening on ")[1].split()[0].rsplit(":", 1)[1])
            return proc, port
    raise AssertionError("engine did not start listening")


def test_tcp_requires_the_token():
    proc, port = _tcp_engine("s3cret")
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rwb")
            assert json.loads(f.readline())["auth"] == "token"
            f.write(b'{"type": "request", "id": "1", "method": "ping"}\n')
            f.flush()
            assert "not authenticated" in json.loads(f.readline())["message"]
            f.write(b'{"type": "auth", "token": "wrong"}\n')
            f.flush()
            assert json.loads(f.readline())["message"] == "wrong token"
            f.write(b'{"type": "auth", "token": "s3cret"}\n{"type": "request", "id": "2", "method": "ping"}\n')
            f.flush()
            reply = json.loads(f.readline())
            assert reply["id"] == "2" and reply["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(10)


def test_bad_listen_address_is_a_clear_error():
    r = subprocess.run(saescope_cmd("engine", "serve", "--listen", "nonsense"), capture_output=True,
                       text=True, cwd=REPO, timeout=60)
    assert r.returncode == 2 and "HOST:PORT" in r.stderr and "Traceback" not in r.stderr
