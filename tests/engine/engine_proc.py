"""A real engine subprocess driven over its stdio pipe, for the protocol tests."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time

from tests.conftest import REPO, saescope_cmd


class EngineProcess:
    """Starts `saescope engine serve --stdio`; collects every stdout line in a queue."""

    def __init__(self, *extra: str):
        self.proc = subprocess.Popen(saescope_cmd("engine", "serve", "--stdio", *extra),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, cwd=REPO)
        self.lines: queue.Queue = queue.Queue()
        self.raw: list[bytes] = []
        self.stderr: list[bytes] = []
        threading.Thread(target=self._pump, daemon=True).start()
        threading.Thread(target=self._pump_err, daemon=True).start()
        self.hello = self.next(timeout=60)

    def _pump(self) -> None:
        for line in self.proc.stdout:
            self.raw.append(line)
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def _pump_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr.append(line)

    def send_raw(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def send(self, obj: dict) -> None:
        self.send_raw(json.dumps(obj).encode() + b"\n")

    def request(self, rid: str, method: str, /, **params) -> None:
        self.send({"type": "request", "id": rid, "method": method, "params": params})

    def next(self, timeout: float = 30) -> dict:
        msg = self.lines.get(timeout=timeout)
        if msg is None:
            raise EOFError("engine closed its stdout")
        return msg

    def until(self, pred, timeout: float = 60) -> tuple[dict, list[dict]]:
        """Read until a message matches `pred`; return it and everything read before."""
        seen, deadline = [], time.time() + timeout
        while True:
            msg = self.next(timeout=max(0.1, deadline - time.time()))
            if pred(msg):
                return msg, seen
            seen.append(msg)

    def reply(self, rid: str, timeout: float = 60) -> tuple[dict, list[dict]]:
        return self.until(lambda m: m["type"] == "reply" and m["id"] == rid, timeout)

    def close(self, timeout: float = 30) -> int:
        if self.proc.stdin and not self.proc.stdin.closed:
            self.proc.stdin.close()
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
