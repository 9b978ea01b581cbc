"""End to end: the real `saescope` command in tmux at 80x24, attached to a
listening engine, used like a person: every pane by its key (F2-F7), help with F1
while typing, then the Ablation pane: a prompt, its tree, two levels expanded, a
node ablated with `a` (the prediction before and after), restored with `a`,
ablated again, the down tree with its before/after table, and that node opened
in the Inspector."""

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
    tmux.wait_for("F2…F7 Panes", 10)  # the pane keys, in the footer

    # Every pane by its key, even while typing in the prompt.
    tmux("send-keys", "-t", "app", "def f(")
    for key, seen in (("F3", "feature "), ("F5", "quiet fraction"), ("F6", "no circuit yet"), ("F7", "no feature yet"),
                      ("F2", "def f("), ("F4", "no tree yet")):
        keys(tmux, key)
        tmux.wait_for(seen, 10)
    keys(tmux, "F1")
    tmux.wait_for("Show the Ablation pane", 10)  # help, listing the keys pane by pane
    keys(tmux, "F1")  # closes it too (a lone Escape in a terminal waits for a sequence)
    tmux.wait_for("no tree yet", 10)

    tmux("send-keys", "-t", "app", PROMPT)
    keys(tmux, "Enter")
    screen = tmux.wait_for("predicts ")
    assert "def" in screen and "≈ attribution" in screen

    # Level 1: the first downstream feature's drivers.
    keys(tmux, *["Down"] * downs_to(screen, "predicts ", "mlp_out #"), "Enter")
    screen = tmux.wait_for("resid_mid #", 30)
    # Level 2: the first upstream feature under it (nothing feeds it: no ▶), then ablate it:
    # the prediction before → after appears; `a` again restores it.
    keys(tmux, *["Down"] * downs_to(screen, "▼ mlp_out #", "resid_mid #"))
    line = next(li for li in tmux.screen().splitlines() if "resid_mid #" in li)
    assert "▶" not in line
    feature = re.search(r"resid_mid #(\d+)", line).group(1)
    keys(tmux, "a")
    screen = tmux.wait_for("prediction ", 30)
    assert f"✗ resid_mid #{feature}" in screen and "→" in screen.split("prediction ")[1].splitlines()[0]
    keys(tmux, "a")
    screen = tmux.wait_for("Ablations restored", 10)
    assert f"✗ resid_mid #{feature}" not in screen and "prediction " not in screen
    keys(tmux, "a")
    tmux.wait_for("prediction ", 30)

    # The down tree: what the ablation drives, and the table of the prediction before/after.
    keys(tmux, "d")
    screen = tmux.wait_for(f"ablate resid_mid #{feature}", 30)
    assert "↓ what it drives" in screen and "before" in screen and "after" in screen and "change" in screen
    assert re.search(r"▲ .*\d+\.\d% +\d+\.\d% +[+−]\d+\.\d%", screen), screen  # the top token after
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)

    keys(tmux, "d")
    tmux.wait_for(f"✗ resid_mid #{feature}", 10)
    keys(tmux, "o")
    screen = tmux.wait_for(f"#{feature} of ", 30)
    assert "blocks.0.hook_resid_mid" in screen and "resid_mid-topk" in screen
    quit_cleanly(tmux)
