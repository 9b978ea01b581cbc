"""Property test: a real engine answers every random or mutated line and stays alive.

Each non-blank line sent gets exactly one final message (an `error`, or the
`reply` of the request it carried); events may come in between. Thousands of
lines go through one engine process.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.engine.engine_proc import EngineProcess

SEEDS = [
    {"type": "request", "id": "x", "method": "ping"},
    {"type": "request", "id": "x", "method": "predict", "params": {"text": "def f(", "top": 3}},
    {"type": "request", "id": "x", "method": "cancel", "params": {"target": "nope"}},
    {"type": "request", "id": "x", "method": "jobs", "params": {}},
    {"type": "request", "id": "x", "method": "model.info"},
    {"type": "auth", "token": "abc"},
    {"type": "hello", "protocol": 1, "version": "x", "pid": 1, "capabilities": []},
]
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
    max_leaves=10,
)
_counter = itertools.count()


@st.composite
def mutated_message(draw) -> bytes:
    msg = json.loads(json.dumps(draw(st.sampled_from(SEEDS))))
    for _ in range(draw(st.integers(0, 3))):
        key = draw(st.sampled_from(sorted(msg) + ["params", "extra"]))
        action = draw(st.sampled_from(["drop", "replace", "nest"]))
        if action == "drop":
            msg.pop(key, None)
        elif action == "replace":
            msg[key] = draw(json_values)
        else:
            msg.setdefault("params", {})
            if isinstance(msg["params"], dict):
                msg["params"][draw(st.text(max_size=6))] = draw(json_values)
    if msg.get("type") == "request" and isinstance(msg.get("id"), str):
        msg["id"] = f"{msg['id']}-{next(_counter)}"  # mostly fresh ids; some mutations reuse
    line = json.dumps(msg).encode()
    if draw(st.booleans()):  # byte-level damage too
        # a fraction, not an index: the line's length depends on the id counter, and
        # hypothesis needs the same draws whatever that counter says
        pos = int(draw(st.floats(0, 1)) * len(line))
        line = line[:pos] + draw(st.binary(max_size=8)) + line[pos:]
    return line.replace(b"\n", b" ").replace(b"\r", b" ")


random_line = st.binary(min_size=1, max_size=200).map(lambda b: b.replace(b"\n", b" ").replace(b"\r", b" "))
any_line = st.one_of(mutated_message(), random_line, st.text(max_size=200).map(lambda t: t.encode()))


@pytest.fixture(scope="module")
def engine():
    proc = EngineProcess()
    proc.request("load", "model.load", spec="default")
    proc.reply("load", timeout=120)
    yield proc
    assert proc.close() == 0


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(lines=st.lists(any_line, min_size=1, max_size=25))
def test_engine_answers_every_line_and_stays_alive(engine, lines):
    lines = [l for l in lines if l.strip()]
    for line in lines:
        engine.send_raw(line + b"\n")
    finals = 0
    while finals < len(lines):
        msg = engine.next(timeout=30)
        assert msg["type"] in {"event", "reply", "error"}, msg
        if msg["type"] in {"reply", "error"}:
            finals += 1
    probe = f"probe-{next(_counter)}"
    engine.request(probe, "ping")
    assert engine.reply(probe, timeout=30)[0]["status"] == "ok"
    assert engine.proc.poll() is None
