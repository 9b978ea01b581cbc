"""Shared helpers for the TUI tests: a factory for the app on a real local engine,
and a poller that waits for a condition while the app keeps running.

Notes
- This folder is the package `tests.tui` (tests/ has an `__init__.py` too); were
  it a top-level package, pytest would import it as `tui` and shadow the app.
- The engine is always real (a subprocess speaking the protocol), with the
  shipped default model; nothing here sets SAESCOPE_WEIGHTS.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from typing import Callable

import pytest

MODEL_TIMEOUT = 90.0  # loading the model on a busy 2-core box can take a while


async def _wait_until(pilot, predicate: Callable[[], object], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what or predicate}")
        await pilot.pause(0.05)


@pytest.fixture
def wait_until():
    """`await wait_until(pilot, predicate, timeout, what)`: poll while the app runs."""
    return _wait_until


@pytest.fixture
def make_app():
    """`make_app(target=None, model="default")`: the real app, on a local engine by default."""
    from tui.app import SaescopeApp
    from tui.target import EngineTarget

    def make(target=None, model: str = "default") -> SaescopeApp:
        return SaescopeApp(target or EngineTarget.local(), model)

    return make


@pytest.fixture
def model_loaded(wait_until):
    """`await model_loaded(pilot)`: wait until the app's engine has loaded its model."""

    async def wait(pilot) -> None:
        app = pilot.app
        await wait_until(pilot, lambda: app.link.model is not None or app.link.model_error,
                         MODEL_TIMEOUT, "the model to load")
        assert app.link.model is not None, app.link.model_error

    return wait


def _listening_engine(*extra: str):
    proc = subprocess.Popen([sys.executable, "-m", "engine", "engine", "serve", "--listen", "127.0.0.1:0",
                             "--token", "s3cret", *extra], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the engine prints its address once it listens
            if m := re.search(r"listening on 127\.0\.0\.1:(\d+)", line):
                break
        else:
            raise AssertionError("the engine did not start listening")
        yield f"127.0.0.1:{m.group(1)}"
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture
def tcp_engine():
    """HOST:PORT of a real engine listening on loopback with the token `s3cret`."""
    yield from _listening_engine()


@pytest.fixture
def tcp_engine_with_model():
    """Like `tcp_engine`, with the default model loaded at start."""
    yield from _listening_engine("--model", "default")
