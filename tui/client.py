"""An asyncio client for the engine protocol (no Textual here, so scripts and tests
can use it too).

`EngineClient(target)` starts or reaches an engine, reads its `hello`, checks the
protocol version, authenticates on TCP, and then multiplexes requests: each gets a
string id, its events go to that request's callback, and its one reply resolves
its future. Engine stderr lines go to `on_log`. When the engine dies (end of its
stdout, or its process exits) every pending request fails with `EngineGone` and
`on_disconnect` is called once with a sentence saying why.

Notes
- Subprocess engines start in a new session: a command such as ssh cannot open the
  terminal to ask for a password and draw over the app; it fails instead, and its
  stderr lands in the log.
- A request whose awaiting task is cancelled (a newer prediction replaced it) is
  cancelled in the engine too, and its late reply is dropped.
- Lines on the engine's stdout before the hello that are not JSON (a login shell's
  chatter) are logged and skipped; after the hello they would be a bug, so they
  are logged as such.
- `close()` just closes the engine's stdin (or the socket): the engine cancels its
  jobs and exits at end of input. It is terminated only if it does not within the
  timeout.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import signal
from dataclasses import dataclass
from typing import Any, Callable, Optional

import msgspec

from engine.protocol import (PROTOCOL_VERSION, Auth, Error, Event, Hello, Reply, Request, decode, decode_result,
                             encode, event_data)
from tui.target import EngineTarget

STREAM_LIMIT = 64 << 20  # replies can be large (results, tables); the default 64 KiB is not enough
HELLO_TIMEOUT = 30.0  # ssh and a cold Python start can take a while on a busy box

LogCallback = Callable[[str, str], None]  # (source: "engine" | "client", line)


class EngineError(Exception):
    """The engine refused or failed a request; the message is one line for a person."""


class EngineGone(EngineError):
    """The engine is not running or the connection is closed."""


class JobCancelled(EngineError):
    """The request's reply said `cancelled`."""


@dataclass
class PendingRequest:
    """A request in flight: its id, and the future its reply resolves."""

    id: str
    method: str
    reply: asyncio.Future
    on_event: Optional[Callable[[Event], None]] = None


def describe_exit(returncode: int | None) -> str:
    """How a process ended, in words: `killed by SIGKILL`, `exited with code 1`."""
    if returncode is None:
        return "closed its output"
    if returncode < 0:
        try:
            return f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"killed by signal {-returncode}"
    if returncode == 0:
        return "exited"
    return f"exited with code {returncode}"


class EngineClient:
    def __init__(self, target: EngineTarget, on_log: LogCallback | None = None,
                 on_disconnect: Callable[[str], None] | None = None,
                 hello_timeout: float = HELLO_TIMEOUT):
        self.target = target
        self.on_log = on_log or (lambda source, line: None)
        self.on_disconnect = on_disconnect or (lambda reason: None)
        self.hello_timeout = hello_timeout
        self._reset()

    def _reset(self) -> None:
        self.hello: Hello | None = None
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: Any = None  # StreamWriter (subprocess stdin or socket)
        self._pending: dict[str, PendingRequest] = {}
        self._ids = itertools.count(1)
        self._tasks: list[asyncio.Task] = []
        self._stderr_task: asyncio.Task | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=5)
        self._protocol_errors: collections.deque[str] = collections.deque(maxlen=5)
        self._closing = False
        self.gone: str | None = "not started"  # why the engine cannot be used; None while connected

    @property
    def connected(self) -> bool:
        return self.gone is None

    # ---- starting ---------------------------------------------------------------
    async def start(self) -> Hello:
        """Start or reach the engine and wait for its hello; raises EngineError."""
        self._reset()
        if self.target.how == "tcp":
            await self._open_tcp()
        else:
            await self._spawn()
        try:
            hello = await asyncio.wait_for(self._read_hello(), self.hello_timeout)
        except asyncio.TimeoutError:
            await self._abort()
            raise EngineGone(f"no hello from the engine within {self.hello_timeout:.0f} s") from None
        except EngineError:
            await self._abort()
            raise
        if hello.protocol != PROTOCOL_VERSION:
            await self._abort()
            raise EngineError(f"the engine speaks protocol {hello.protocol}; "
                              f"this app speaks {PROTOCOL_VERSION}: install matching versions")
        self.hello, self.gone = hello, None
        if hello.auth == "token":
            if not self.target.token:
                await self._abort()
                raise EngineError("the engine asks for a token: pass --token (it prints one when it starts)")
            await self._write(encode(Auth(self.target.token)))
        self._tasks.append(asyncio.create_task(self._read_loop()))
        if self.process is not None:
            self._tasks.append(asyncio.create_task(self._watch_process()))
        try:  # one round trip: proves the engine answers (and that the token was right)
            await self.call("ping")
        except EngineError as e:
            await self.close()
            errors = "; ".join(self._protocol_errors)
            raise EngineError(f"the engine did not answer a ping: {errors or e}") from None
        return hello

    async def _spawn(self) -> None:
        argv = self.target.argv
        try:
            self.process = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE, limit=STREAM_LIMIT, start_new_session=True)
        except FileNotFoundError:
            raise EngineGone(f"cannot start the engine: command {argv[0]!r} not found") from None
        except OSError as e:
            raise EngineGone(f"cannot start the engine ({argv[0]}): {e.strerror or e}") from None
        self._reader, self._writer = self.process.stdout, self.process.stdin
        self._stderr_task = asyncio.create_task(self._pump_stderr(self.process.stderr))

    async def _open_tcp(self) -> None:
        host, port = self.target.host, self.target.port
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(host, port, limit=STREAM_LIMIT), self.hello_timeout)
        except asyncio.TimeoutError:
            raise EngineGone(f"cannot connect to {host}:{port}: timed out") from None
        except ConnectionRefusedError:
            raise EngineGone(f"cannot connect to {host}:{port}: connection refused "
                             "(is `saescope engine serve --listen` running there?)") from None
        except OSError as e:
            raise EngineGone(f"cannot connect to {host}:{port}: {e.strerror or e}") from None
        self.on_log("client", f"connected to {host}:{port}; the engine's own log stays on that side")

    async def _read_hello(self) -> Hello:
        while True:
            line = await self._reader.readline()
            if not line:
                raise EngineGone("the engine " + await self._exit_reason("before saying hello"))
            try:
                msg = decode(line)
            except (msgspec.DecodeError, msgspec.ValidationError):
                self.on_log("client", f"skipped non-protocol output: {line.decode(errors='replace').rstrip()}")
                continue
            if isinstance(msg, Hello):
                return msg
            raise EngineError(f"expected a hello from the engine, got a {type(msg).__name__.lower()}")

    # ---- requests -----------------------------------------------------------------
    async def send_request(self, method: str, params: dict | None = None,
                           on_event: Callable[[Event], None] | None = None) -> PendingRequest:
        """Send a request and return it in flight; await `wait(pending)` for the reply."""
        if self.gone is not None:
            raise EngineGone(f"the engine is not running ({self.gone})")
        loop = asyncio.get_running_loop()
        pending = PendingRequest(str(next(self._ids)), method, loop.create_future(), on_event)
        self._pending[pending.id] = pending
        try:
            await self._write(encode(Request(pending.id, method, params or {})))
        except EngineGone:
            self._pending.pop(pending.id, None)
            raise
        return pending

    async def wait(self, pending: PendingRequest) -> Reply:
        try:
            return await pending.reply
        except asyncio.CancelledError:
            # The caller gave up: stop the engine's work too, and forget the reply.
            if self._pending.pop(pending.id, None) is not None and self.connected:
                task = asyncio.create_task(self._cancel_quietly(pending.id))
                self._tasks.append(task)
            raise

    async def request(self, method: str, params: dict | None = None,
                      on_event: Callable[[Event], None] | None = None) -> Reply:
        """Send a request and return its reply, whatever its status."""
        return await self.wait(await self.send_request(method, params, on_event))

    async def call(self, method: str, params: dict | None = None,
                   on_event: Callable[[Event], None] | None = None) -> dict:
        """Like `request`, but returns the result and raises for `error` and `cancelled`."""
        return result_of(method, await self.request(method, params, on_event))

    async def cancel(self, request_id: str) -> None:
        await self.call("cancel", {"target": request_id})

    async def _cancel_quietly(self, request_id: str) -> None:
        with contextlib.suppress(EngineError):
            await self.request("cancel", {"target": request_id})

    async def _write(self, data: bytes) -> None:
        try:
            self._writer.write(data)
            await self._writer.drain()
        except (ConnectionError, OSError, RuntimeError) as e:
            raise EngineGone(f"cannot write to the engine: {e}") from None

    # ---- reading ------------------------------------------------------------------
    async def _read_loop(self) -> None:
        try:
            while line := await self._reader.readline():
                self._dispatch(line)
        except (ConnectionError, OSError, ValueError) as e:
            self.on_log("client", f"reading from the engine failed: {e}")
        await self._lost()

    def _dispatch(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.on_log("client", f"engine wrote a non-protocol line: {line.decode(errors='replace').rstrip()}")
            return
        if isinstance(msg, Reply):
            pending = self._pending.pop(msg.id, None)
            if pending is not None and not pending.reply.done():
                pending.reply.set_result(msg)
        elif isinstance(msg, Event):
            pending = self._pending.get(msg.id)
            if pending is not None and pending.on_event is not None:
                try:
                    msg.data = event_data(msg)  # typed: Progress, LogData or RunMetrics
                    pending.on_event(msg)
                except Exception as e:  # noqa: BLE001 - a UI bug must not stop the reader
                    self.on_log("client", f"event handler for {pending.method} failed: {e!r}")
        elif isinstance(msg, Error):
            self._protocol_errors.append(msg.message)
            pending = self._pending.pop(msg.id, None) if msg.id else None
            if pending is not None and not pending.reply.done():
                pending.reply.set_exception(EngineError(msg.message))
            else:
                self.on_log("client", f"engine protocol error: {msg.message}")

    async def _pump_stderr(self, stream: asyncio.StreamReader) -> None:
        with contextlib.suppress(ConnectionError, OSError, ValueError):
            while line := await stream.readline():
                text = line.decode(errors="replace").rstrip()
                if text:
                    self._stderr_tail.append(text)
                    self.on_log("engine", text)

    async def _watch_process(self) -> None:
        await self.process.wait()
        # Normally stdout ends first; a grandchild holding the pipe open must not
        # hide the death, so give the reader a moment and then declare it.
        await asyncio.sleep(1.0)
        await self._lost()

    async def _exit_reason(self, when: str = "") -> str:
        """Why the engine went away, e.g. `killed by SIGKILL`, with its last stderr line."""
        if self.process is None:
            return f"closed the connection {when}".rstrip()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.process.wait(), 3.0)
        if self._stderr_task is not None:  # let the last stderr lines (a traceback) arrive
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._stderr_task), 1.0)
        reason = f"{describe_exit(self.process.returncode)} {when}".rstrip()
        if self.process.returncode not in (None, 0) and self._stderr_tail:
            reason += f": {self._stderr_tail[-1]}"
        return reason

    async def _lost(self) -> None:
        if self.gone is not None:
            return
        self.gone = "closing"
        reason = "closed by the app" if self._closing else await self._exit_reason()
        self.gone = reason
        self._fail_pending(EngineGone(reason))
        if not self._closing:
            self.on_disconnect(reason)

    def _fail_pending(self, error: Exception) -> None:
        pending, self._pending = list(self._pending.values()), {}
        for p in pending:
            if not p.reply.done():
                p.reply.set_exception(error)

    # ---- stopping -----------------------------------------------------------------
    async def close(self, timeout: float = 5.0) -> None:
        """End the session: close the engine's input and wait for it to exit."""
        self._closing = True
        if self.gone is None:
            self.gone = "closed by the app"
        if self._writer is not None:
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self._writer.close()
        if self.process is not None and self.process.returncode is None:
            try:
                await asyncio.wait_for(self.process.wait(), timeout)
            except asyncio.TimeoutError:
                self.on_log("client", f"the engine did not exit within {timeout:.0f} s; terminating it")
                with contextlib.suppress(ProcessLookupError):
                    self.process.terminate()
                try:
                    await asyncio.wait_for(self.process.wait(), 2.0)
                except asyncio.TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        self.process.kill()
                    await self.process.wait()
        if self._stderr_task is not None:
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._stderr_task, 1.0)
        for task in self._tasks:
            task.cancel()
        self._fail_pending(EngineGone("closed by the app"))

    async def _abort(self) -> None:
        """Give up on a half-started engine."""
        self._closing = True
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
        await self.close(timeout=2.0)

    async def restart(self) -> Hello:
        """Close this engine (if it still runs) and start a fresh one the same way."""
        await self.close()
        return await self.start()


def result_of(method: str, reply: Reply) -> Any:
    """The result of an `ok` reply as the method's typed struct (`engine.protocol.RESULTS`);
    raises `JobCancelled` or `EngineError` otherwise."""
    if reply.status == "ok":
        try:
            return decode_result(method, reply.result)
        except (msgspec.ValidationError, TypeError) as e:
            raise EngineError(f"the engine's reply to {method} does not match this app's protocol "
                              f"({e}): install matching versions") from None
    if reply.status == "cancelled":
        raise JobCancelled(f"{method} was cancelled")
    raise EngineError(reply.error or f"{method} failed")
