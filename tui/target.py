"""Where the engine runs and how the app reaches it: a local subprocess, any
command line that speaks `--stdio` (e.g. over ssh), or a TCP address.

Notes
- The local engine is started as `python -m engine engine serve --stdio` with this
  interpreter, so the app and the engine share one installation and no PATH lookup
  can pick a different `saescope`.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from typing import Literal

How = Literal["local", "command", "tcp"]


def local_engine_argv() -> tuple[str, ...]:
    return (sys.executable, "-m", "engine", "engine", "serve", "--stdio")


@dataclass(frozen=True)
class EngineTarget:
    """One way to reach an engine; build it with `local`, `command` or `tcp`."""

    how: How
    argv: tuple[str, ...] = ()
    """The command that starts an engine speaking the protocol on stdin/stdout."""
    host: str = ""
    port: int = 0
    token: str | None = None
    """Sent in an `auth` line when a TCP engine asks for one."""

    @classmethod
    def local(cls) -> EngineTarget:
        return cls("local", local_engine_argv())

    @classmethod
    def command(cls, cmdline: str) -> EngineTarget:
        """A shell-style command line, split like a shell would (no shell runs it)."""
        argv = tuple(shlex.split(cmdline))
        if not argv:
            raise ValueError("--engine needs a command line, e.g. \"ssh HOST saescope engine serve --stdio\"")
        return cls("command", argv)

    @classmethod
    def tcp(cls, address: str, token: str | None = None) -> EngineTarget:
        host, sep, port = address.rpartition(":")
        if not sep or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"--connect takes HOST:PORT, got {address!r}")
        return cls("tcp", host=host.strip("[]") or "127.0.0.1", port=int(port), token=token)

    @property
    def on_this_machine(self) -> bool:
        """Whether the engine reads this machine's files: a local engine, or TCP on
        loopback. An engine command (ssh, say) may run anywhere: not assumed."""
        return self.how == "local" or (self.how == "tcp" and self.host in ("127.0.0.1", "localhost", "::1"))

    def describe(self) -> str:
        """A few words for the status bar: `local`, `via ssh`, `tcp HOST:PORT`."""
        if self.how == "local":
            return "local"
        if self.how == "command":
            return f"via {os.path.basename(self.argv[0])}"
        return f"tcp {self.host}:{self.port}"
