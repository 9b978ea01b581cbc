"""The engine's request loop: JSON lines in, events and replies out.

`Session` serves one conversation (stdio, or one TCP connection). Every request
gets exactly one `Reply`; a line that is not a valid request gets an `Error` and
the session goes on. End of input cancels running jobs and returns.

Notes
- stdio mode moves the real stdout to a private descriptor and points fd 1 at
  stderr, so a stray `print` or a library's progress bar (even from C) can never
  corrupt the protocol stream.
- Request ids must be unique within a session: a reused id gets an `Error` (not a
  `Reply`), so the first request with that id still gets its own single reply.
- Jobs run on daemon threads; cancellation is cooperative (`Job.check`).
"""

from __future__ import annotations

import collections
import os
import secrets
import socketserver
import sys
import threading
import time
import traceback
from typing import BinaryIO

import msgspec

from engine import __version__
from engine.errors import UserError
from engine.handlers import CAPABILITIES, HANDLERS, INLINE
from engine.workspace import Workspace
from engine.jobs import Cancelled, Job
from engine.protocol import (MAX_LINE_BYTES, PROTOCOL_VERSION, Auth, Cancelling, Error, Event, Hello, JobInfo,
                             JobList, Reply, Request, decode, encode, parse_params)


ENDED_KEPT = 20  # ended jobs that `jobs` still lists, with their status


def log(message: str) -> None:
    print(f"[engine] {message}", file=sys.stderr, flush=True)


class Session:
    def __init__(self, state: Workspace, reader: BinaryIO, writer: BinaryIO, token: str | None = None):
        self.state, self.reader, self.writer, self.token = state, reader, writer, token
        self.write_lock = threading.Lock()
        self.jobs: dict[str, Job] = {}
        self.ended: collections.deque[JobInfo] = collections.deque(maxlen=ENDED_KEPT)
        self.jobs_lock = threading.Lock()
        self.seen_ids: set[str] = set()
        self.authenticated = token is None

    # ---- output -------------------------------------------------------------
    def send(self, msg) -> None:
        data = encode(msg)
        with self.write_lock:
            try:
                self.writer.write(data)
                self.writer.flush()
            except (BrokenPipeError, ConnectionError, ValueError, OSError):
                pass  # the client is gone; the reader will see end of input

    # ---- input --------------------------------------------------------------
    def read_line(self) -> bytes | None:
        """One line, or b"" for an over-long one (already skipped), or None at EOF."""
        line = self.reader.readline(MAX_LINE_BYTES + 1)
        if not line:
            return None
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while True:  # discard the rest of the line
                rest = self.reader.readline(MAX_LINE_BYTES)
                if not rest or rest.endswith(b"\n"):
                    break
            self.send(Error(f"line longer than {MAX_LINE_BYTES} bytes ignored"))
            return b""
        return line

    def run(self) -> None:
        self.send(Hello(PROTOCOL_VERSION, __version__, os.getpid(), CAPABILITIES,
                        auth="token" if self.token else "none"))
        try:
            while (line := self.read_line()) is not None:
                if line.strip():
                    self.handle_line(line)
        finally:
            self.shutdown()

    def shutdown(self, wait: float = 5.0) -> None:
        with self.jobs_lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.client_gone = True  # not a cancel request: training goes on (handlers/training.py)
            job.cancel_flag.set()
        for job in jobs:
            t = getattr(job, "thread", None)
            if t is not None:
                t.join(wait)

    def handle_line(self, line: bytes) -> None:
        try:
            msg = decode(line)
        except (msgspec.DecodeError, msgspec.ValidationError) as e:
            self.send(Error(f"not a valid message: {e}"))
            return
        except Exception as e:  # noqa: BLE001 - msgspec raises others on odd input (e.g. recursion)
            self.send(Error(f"not a valid message: {type(e).__name__}"))
            return
        if isinstance(msg, Auth):
            if self.token is not None and secrets.compare_digest(msg.token.encode(), self.token.encode()):
                self.authenticated = True
            else:
                self.send(Error("wrong token"))
            return
        if not isinstance(msg, Request):
            self.send(Error(f"the engine takes requests, not {type(msg).__name__.lower()} messages"))
            return
        if not self.authenticated:
            self.send(Error("not authenticated: send {\"type\": \"auth\", \"token\": ...} first", msg.id))
            return
        if msg.id in self.seen_ids:
            self.send(Error(f"request id {msg.id!r} was already used in this session", msg.id))
            return
        self.seen_ids.add(msg.id)
        self.dispatch(msg)

    def dispatch(self, req: Request) -> None:
        if req.method not in HANDLERS and req.method not in ("cancel", "jobs"):
            self.send(Reply(req.id, "error", error=f"unknown method {req.method!r}; "
                                                   f"known: {', '.join(CAPABILITIES)}"))
            return
        try:
            params = parse_params(req.method, req.params)
        except msgspec.ValidationError as e:
            self.send(Reply(req.id, "error", error=f"bad params for {req.method}: {e}"))
            return
        ctx = Job(req.id, req.method, emit=lambda kind, data: self.send(Event(req.id, kind, data)))
        if req.method == "cancel":
            self.send(self.cancel(req.id, params.target))
        elif req.method == "jobs":
            with self.jobs_lock:
                running = [JobInfo(j.request_id, j.method, j.started) for j in self.jobs.values()]
                ended = list(self.ended)
            self.send(Reply(req.id, "ok", result=JobList(jobs=running, ended=ended)))
        elif req.method in INLINE:
            self.send(self.execute(req, params, ctx))
        else:
            with self.jobs_lock:
                self.jobs[req.id] = ctx
            thread = threading.Thread(target=self.run_job, args=(req, params, ctx), daemon=True,
                                      name=f"job-{req.method}-{req.id}")
            ctx.thread = thread
            thread.start()

    def cancel(self, request_id: str, target: str) -> Reply:
        with self.jobs_lock:
            job = self.jobs.get(target)
        if job is None:
            return Reply(request_id, "error", error=f"no running job with id {target!r}")
        job.cancel_flag.set()
        return Reply(request_id, "ok", result=Cancelling(cancelling=target))

    def run_job(self, req: Request, params, ctx: Job) -> None:
        reply = Reply(req.id, "error", error=f"internal error in {req.method}: the job's thread stopped")
        try:
            reply = self.execute(req, params, ctx)
        except BaseException as e:  # not an Exception (SystemExit, ...): still one reply, then re-raise
            reply = Reply(req.id, "error", error=f"internal error in {req.method}: {type(e).__name__}: {e}")
            raise
        finally:
            # off the list before the reply goes out: a client that reads the reply and
            # asks `jobs` at once must not see the job still running
            with self.jobs_lock:
                self.jobs.pop(req.id, None)
                self.ended.append(JobInfo(req.id, req.method, ctx.started, reply.status, reply.error, time.time()))
            self.send(reply)

    def execute(self, req: Request, params, ctx: Job) -> Reply:
        try:
            result = HANDLERS[req.method](self.state, params, ctx)
            self.state.remeasure()  # what the request opened or grew now counts against the budget
            return Reply(req.id, "ok", result=result)
        except Cancelled:
            return Reply(req.id, "cancelled")
        except UserError as e:
            return Reply(req.id, "error", error=str(e))
        except Exception as e:  # noqa: BLE001 - a bug must not kill the engine
            log(f"{req.method} failed:\n{traceback.format_exc()}")
            # the message reaches the client as a log line too (the reply follows)
            ctx.log(f"{req.method} failed: {type(e).__name__}: {e}")
            return Reply(req.id, "error", error=f"internal error in {req.method}: {type(e).__name__}: {e}")


def _preload(state: Workspace, spec: str | None) -> None:
    if spec:
        from engine.models import load_model

        state.set_model(load_model(spec))


def serve_stdio(preload: str | None = None, budget: int | None = None) -> None:
    """Serve one session on stdin/stdout until end of input."""
    protocol_out = os.fdopen(os.dup(sys.stdout.fileno()), "wb", buffering=0)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    state = Workspace(budget)
    _preload(state, preload)
    Session(state, sys.stdin.buffer, protocol_out).run()
    log("end of input: exiting")


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        server: _Server = self.server  # type: ignore[assignment]
        Session(server.state, self.rfile, self.wfile, token=server.token).run()


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def parse_address(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) < 65536:
        raise UserError(f"--listen takes HOST:PORT, got {listen!r}")
    return host or "127.0.0.1", int(port)


def serve_tcp(listen: str, token: str | None = None, preload: str | None = None, budget: int | None = None,
              ready: threading.Event | None = None) -> None:
    """Serve TCP connections; each must authenticate with `token` first."""
    host, port = parse_address(listen)
    token = token or secrets.token_urlsafe(16)
    try:
        server = _Server((host, port), _Handler)
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}") from None
    server.state, server.token = Workspace(budget), token
    _preload(server.state, preload)
    bound = server.server_address
    if host not in ("127.0.0.1", "localhost", "::1"):
        log(f"warning: listening on {host}, which is not loopback")
    log(f"listening on {bound[0]}:{bound[1]}  token: {token}")
    log(f"connect with: saescope --connect {bound[0]}:{bound[1]} --token {token}")
    if ready is not None:
        ready.set()
    with server:
        server.serve_forever()
