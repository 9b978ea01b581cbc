"""The engine client against a real engine process: requests, events, errors,
cancellation, death, restart, TCP with a token, and engines that fail to start."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from engine.protocol import PROTOCOL_VERSION
from tui.client import EngineClient, EngineError, EngineGone, JobCancelled, result_of
from tui.target import EngineTarget


def test_requests_replies_events_and_error_replies():
    async def main():
        logs = []
        client = EngineClient(EngineTarget.local(), on_log=lambda source, line: logs.append((source, line)))
        hello = await client.start()
        try:
            assert hello.protocol == PROTOCOL_VERSION and hello.pid > 0 and "predict" in hello.capabilities
            assert (await client.call("ping")).pong is True

            events = []
            reply = await client.request("sleep", {"seconds": 0.2, "steps": 4}, on_event=events.append)
            assert reply.status == "ok" and reply.result == {"slept": 0.2, "steps": 4}
            assert [e.data.step for e in events] == [1, 2, 3, 4]
            assert {e.id for e in events} == {reply.id} and isinstance(reply.id, str)

            unknown = await client.request("no.such.method")
            assert unknown.status == "error" and "unknown method" in unknown.error
            with pytest.raises(EngineError, match="no model is loaded"):
                await client.call("predict", {"text": "def f("})
            with pytest.raises(EngineError, match="bad params for sleep"):
                await client.call("sleep", {"seconds": "soon"})
            assert (await client.call("ping")).pong is True  # errors leave the session usable
        finally:
            await client.close()
        assert client.process.returncode == 0  # closing stdin lets the engine exit cleanly
        assert not client.connected
        assert any("end of input" in line for source, line in logs if source == "engine")

    asyncio.run(main())


def test_cancelling_a_job_and_abandoning_a_request():
    async def main():
        client = EngineClient(EngineTarget.local())
        await client.start()
        try:
            started = asyncio.Event()
            pending = await client.send_request("sleep", {"seconds": 30, "steps": 300},
                                                on_event=lambda e: started.set())
            await asyncio.wait_for(started.wait(), 10)
            await client.cancel(pending.id)
            reply = await asyncio.wait_for(client.wait(pending), 10)
            assert reply.status == "cancelled"
            with pytest.raises(JobCancelled):
                result_of("sleep", reply)

            # A caller that gives up (its task is cancelled) stops the engine's job too.
            task = asyncio.create_task(client.request("sleep", {"seconds": 30, "steps": 300}))
            await asyncio.sleep(0.3)
            assert len((await client.call("jobs")).jobs) == 1
            task.cancel()
            for _ in range(100):
                if not (await client.call("jobs")).jobs:
                    break
                await asyncio.sleep(0.05)
            assert (await client.call("jobs")).jobs == []
        finally:
            await client.close()

    asyncio.run(main())


def test_engine_killed_mid_request_fails_pending_requests_and_restart_recovers():
    async def main():
        reasons = []
        client = EngineClient(EngineTarget.local(), on_disconnect=reasons.append)
        hello = await client.start()
        try:
            started = asyncio.Event()
            job = asyncio.create_task(client.request("sleep", {"seconds": 30, "steps": 300},
                                                     on_event=lambda e: started.set()))
            await asyncio.wait_for(started.wait(), 10)
            os.kill(hello.pid, signal.SIGKILL)
            with pytest.raises(EngineGone, match="killed by SIGKILL"):
                await asyncio.wait_for(job, 15)
            assert reasons == ["killed by SIGKILL"]
            assert not client.connected
            with pytest.raises(EngineGone, match="not running"):
                await client.call("ping")

            again = await client.restart()
            assert again.pid != hello.pid and client.connected
            assert (await client.call("ping")).pong is True
        finally:
            await client.close()
        assert reasons == ["killed by SIGKILL"]  # a close is not reported as a death

    asyncio.run(main())


def test_tcp_with_token(tcp_engine):
    async def main():
        client = EngineClient(EngineTarget.tcp(tcp_engine, token="s3cret"))
        hello = await client.start()
        assert hello.auth == "token"
        assert (await client.call("ping")).pong is True
        await client.close()

        with pytest.raises(EngineError, match="wrong token"):
            await EngineClient(EngineTarget.tcp(tcp_engine, token="nope")).start()
        with pytest.raises(EngineError, match="asks for a token"):
            await EngineClient(EngineTarget.tcp(tcp_engine)).start()

    asyncio.run(main())


def test_engines_that_cannot_start_say_why():
    async def main():
        with pytest.raises(EngineGone, match="'no-such-saescope-command' not found"):
            await EngineClient(EngineTarget.command("no-such-saescope-command serve")).start()
        failing = EngineTarget.command("bash -c 'echo no such host >&2; exit 3'")
        with pytest.raises(EngineGone, match="exited with code 3 before saying hello: no such host"):
            await EngineClient(failing).start()
        with pytest.raises(EngineGone, match="cannot connect to 127.0.0.1:1"):
            await EngineClient(EngineTarget.tcp("127.0.0.1:1")).start()

    asyncio.run(main())


def test_targets():
    assert EngineTarget.local().argv[1:] == ("-m", "engine", "engine", "serve", "--stdio")
    cmd = EngineTarget.command("ssh gpu 'saescope engine serve --stdio'")
    assert cmd.argv == ("ssh", "gpu", "saescope engine serve --stdio") and cmd.describe() == "via ssh"
    tcp = EngineTarget.tcp("127.0.0.1:7777", "t")
    assert (tcp.host, tcp.port, tcp.token, tcp.describe()) == ("127.0.0.1", 7777, "t", "tcp 127.0.0.1:7777")
    for bad in ("localhost", "host:port", "host:0"):
        with pytest.raises(ValueError):
            EngineTarget.tcp(bad)
    with pytest.raises(ValueError):
        EngineTarget.command("  ")


def test_an_engine_of_another_protocol_version_is_one_clear_error(tmp_path):
    """An engine of another version (say, an old one on the far side of ssh) says so in its
    hello; the client refuses it with one sentence instead of failing on its replies."""
    import json
    import shlex
    import sys

    fake = tmp_path / "old_engine.py"
    hello = {"type": "hello", "protocol": PROTOCOL_VERSION + 1, "version": "9.9", "pid": 1, "capabilities": []}
    fake.write_text(f"import sys\nprint({json.dumps(json.dumps(hello))}, flush=True)\nsys.stdin.read()\n")

    async def main():
        client = EngineClient(EngineTarget.command(f"{shlex.quote(sys.executable)} {shlex.quote(str(fake))}"))
        with pytest.raises(EngineError) as e:
            await client.start()
        assert str(e.value) == (f"the engine speaks protocol {PROTOCOL_VERSION + 1}; this app speaks "
                                f"{PROTOCOL_VERSION}: install matching versions")
        assert not client.connected

    asyncio.run(main())


def test_a_reply_that_does_not_match_the_protocol_is_an_engine_error():
    from engine.protocol import Reply

    with pytest.raises(EngineError, match="does not match this app's protocol"):
        result_of("ping", Reply("1", "ok", result={"pong": True}))  # fields missing: an old engine
    assert result_of("ping", Reply("1", "ok", result={"pong": True, "time": 1.0, "protocol": 1,
                                                      "version": "x"})).pong is True
