"""End to end: the real `saescope` command in tmux at 80x24, typed at like a person.

Each test runs on its own tmux server (`tmux -L`), which is always killed. The
commands end with `echo EXIT=$?` and a sleep, so a clean quit (and a crash's
traceback) stays readable on the screen.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

BIN = Path(sys.executable).parent  # the venv's bin, where the `saescope` script lives
TIMEOUT = 90.0  # the model loads in 5-10 s on a busy 2-core box; leave room


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args: str) -> str:
        out = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)
        return out.stdout

    def start(self, command: str) -> None:
        path = f"{BIN}:{os.environ.get('PATH', '')}"
        args = ["new-session", "-d", "-x", "80", "-y", "24", "-s", "app",
                f"env PATH={shlex.quote(path)} {command}; echo EXIT=$?; sleep 60"]
        # A server whose last session was just killed is still exiting for a moment; a
        # client that reaches it then gets "server exited unexpectedly". Try again.
        for attempt in range(20):
            try:
                self(*args)
                return
            except subprocess.CalledProcessError as error:
                if "server exited unexpectedly" not in (error.stderr or "") or attempt == 19:
                    raise
                time.sleep(0.25)

    def restart(self, command: str) -> None:
        """Kill the app's session (and with it this test's server), then start `command` anew."""
        self("kill-server")
        self.start(command)

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "app")

    def wait_for(self, text: str, timeout: float = TIMEOUT) -> str:
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} did not appear within {timeout:.0f} s; the screen:\n{screen}")
            time.sleep(0.25)


@pytest.fixture
def tmux():
    t = Tmux(f"saescope-test-{os.getpid()}-{time.monotonic_ns()}")
    try:
        yield t
    finally:
        subprocess.run(["tmux", "-L", t.socket, "kill-server"], capture_output=True)


def predict_and_quit(tmux: Tmux) -> str:
    tmux.wait_for("● connected")
    tmux("send-keys", "-t", "app", "def f(", "Enter")
    screen = tmux.wait_for("entropy")
    assert "<|endoftext|> def ·f (" in screen
    assert "  1  " in screen and " 10  " in screen and "%" in screen
    return screen


def quit_cleanly(tmux: Tmux) -> None:
    tmux("send-keys", "-t", "app", "C-q")
    tmux.wait_for("EXIT=0", 20)


def test_saescope_in_tmux(tmux):
    tmux.start("saescope")
    screen = predict_and_quit(tmux)
    assert "local" in screen and "mini-gelu-1l" in screen
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert "Help" in lines[-1] and "palette" in lines[-1]  # the footer shows the bindings
    quit_cleanly(tmux)


def test_saescope_with_engine_command_in_tmux(tmux):
    engine = "bash -c 'echo stderr-goes-to-the-log >&2; exec saescope engine serve --stdio'"
    tmux.start(f"saescope --engine {shlex.quote(engine)}")
    screen = predict_and_quit(tmux)
    assert "via bash" in screen
    assert "stderr-goes-to-the-log" not in screen  # engine stderr never draws over the app
    tmux("send-keys", "-t", "app", "C-l")
    tmux.wait_for("stderr-goes-to-the-log", 10)  # ...it is in the log view
    quit_cleanly(tmux)
