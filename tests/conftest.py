"""Shared fixtures: the shipped default model, and a real engine subprocess.

Tests use the weights under `weights/` (or `SAESCOPE_WEIGHTS`), never the network.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The registry of detached training jobs (engine.train.detached): one per test session,
# never the user's own (engines and apps started by tests inherit it).
if "SAESCOPE_RUNS" not in os.environ:
    import tempfile

    os.environ["SAESCOPE_RUNS"] = tempfile.mkdtemp(prefix="saescope-test-runs-")


@pytest.fixture(autouse=True)
def own_training_registry(tmp_path_factory, monkeypatch):
    """Each test its own registry of training jobs: an app or engine a test starts lists
    only the runs that test started, whatever ran before it."""
    monkeypatch.setenv("SAESCOPE_RUNS", str(tmp_path_factory.mktemp("training-registry")))


def saescope_cmd(*args: str) -> list[str]:
    """The real `saescope` command, run by this interpreter (no PATH assumptions)."""
    return [sys.executable, "-m", "engine", *args]


def run_saescope(*args: str, env: dict | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(saescope_cmd(*args), capture_output=True, text=True, timeout=timeout,
                          cwd=REPO, env={**os.environ, **(env or {})})


# `SAESCOPE_TEST_DEVICE=cuda make test` runs the in-process tests on a GPU; engine and
# CLI subprocesses pick CUDA by themselves (`--device auto`) where there is one.
TEST_DEVICE = os.environ.get("SAESCOPE_TEST_DEVICE", "cpu")


@pytest.fixture(scope="session")
def default_model():
    from engine.models import load_model

    return load_model("default", device=TEST_DEVICE)
