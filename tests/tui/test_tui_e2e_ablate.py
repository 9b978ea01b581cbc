"""End to end: the real `saescope` command in tmux at 80x24, attached to a
listening engine, driving the Ablation pane like a person: a prompt, its tree,
two levels expanded, a node ablated, and that node opened in the Inspector."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.tui.sae_setup import PROMPT, TOKEN, sae_engine  # noqa: F401 (a fixture)
from tests.tui.test_tui_e2e_tmux import Tmux, quit_cleanly, tmux  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def keys(tmux: Tmux, *names: str) -> None:
    for name in names:  # one at a time, as typed
        tmux("send-keys", "-t", "app", name)
        time.sleep(0.1)


def downs_to(screen: str, start: str, target: str) -> int:
    """Lines from the first line containing `start` to the next one containing `target`."""
    lines = screen.splitlines()
    first = next(i for i, line in enumerate(lines) if start in line)
    return next(i for i in range(first + 1, len(lines)) if target in lines[i]) - first


def test_ablation_pane_in_tmux(tmux, sae_engine):
    # Attached to the shared engine (it holds the model already); the app's default
    # SAE folders are the test's copies.
    tmux.start(f"env SAESCOPE_WEIGHTS={sae_engine.weights} saescope --connect {sae_engine.address} --token {TOKEN}")
    tmux.wait_for("mini-gelu-1l · ")
    keys(tmux, "C-p")
    tmux("send-keys", "-t", "app", "Ablation tree")
    time.sleep(0.5)
    keys(tmux, "Enter")
    tmux.wait_for("no tree yet")
    tmux("send-keys", "-t", "app", PROMPT)
    keys(tmux, "Enter")
    screen = tmux.wait_for("predicts ")
    assert "def" in screen and "≈ attribution" in screen

    # Level 1: the first downstream feature's drivers.
    keys(tmux, *["Down"] * downs_to(screen, "predicts ", "mlp_out #"), "Enter")
    screen = tmux.wait_for("resid_mid #", 30)
    # Level 2: the first upstream feature under it (nothing feeds it), then ablate it.
    keys(tmux, *["Down"] * downs_to(screen, "▼ mlp_out #", "resid_mid #"), "Enter", "a")
    screen = tmux.wait_for("ablate resid_mid #", 30)
    feature = re.search(r"ablate resid_mid #(\d+)", screen).group(1)
    assert "logit " in screen and "↓ what it drives" in screen
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)

    keys(tmux, "d")
    tmux.wait_for(f"✗ resid_mid #{feature}", 10)
    keys(tmux, "o")
    screen = tmux.wait_for(f"#{feature} of ", 30)
    assert "blocks.0.hook_resid_mid" in screen and "resid_mid-topk" in screen
    quit_cleanly(tmux)
