"""End to end: the real `saescope` command in tmux at 80x24, attached to the shared
listening engine: in the Circuit pane a search with each method in turn (`m` cycles
attribution → ig → mask), the three faithfulness curves drawn together with the
legend naming them, and the mask circuit's summary (lambda, plain) and its
per-position nodes in the tree.

Kept short as in `tests/tui/test_tui_circuit_mask.py`: was_were cut to 9 pairs, a
5-point sweep for attribution and ig, 20 Adam steps per mask (typed in the pane)."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tests.tui.test_tui_circuit_mask import MASK_STEPS, small_task
from tests.tui.test_tui_e2e_ablate import keys
from tests.tui.test_tui_e2e_tmux import Tmux, quit_cleanly, tmux  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def wait_for_match(tmux: Tmux, pattern: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    while not re.search(pattern, screen := tmux.screen()):
        if time.monotonic() > deadline:
            raise AssertionError(f"{pattern!r} did not appear within {timeout:.0f} s; the screen:\n{screen}")
        time.sleep(0.25)
    return screen


def to_field(tmux: Tmux, typed: str, shows: str) -> None:
    """Tab to the next field and type there: the Tab's focus change is let to land
    first (on a busy box a key sent right after it can still reach the old field)."""
    keys(tmux, "Tab")
    time.sleep(1.0)
    keys(tmux, *typed)
    wait_for_match(tmux, shows, 10)


def test_three_methods_and_a_mask_circuit_in_tmux(tmux, sae_engine, tmp_path):
    task = small_task(tmp_path)
    tmux.start(f"env SAESCOPE_WEIGHTS={sae_engine.weights} saescope --connect {sae_engine.address} --token {TOKEN}")
    tmux.wait_for("mini-gelu-1l · ")
    keys(tmux, "F6")
    tmux.wait_for("no circuit yet", 10)
    tmux("send-keys", "-t", "app", "-l", task)  # the task field has the focus (its text selected)
    tmux.wait_for("was_were_9.jsonl ", 10)
    to_field(tmux, "5", r"points 5 ")  # 5 points in the sweep
    keys(tmux, "Enter")
    wait_for_match(tmux, r"threshold \S+ · faithfulness", 120)
    assert "━ attribution  ╌ IG  ╌ mask" in tmux.screen()

    keys(tmux, "m")
    tmux.wait_for("method ig ", 10)
    keys(tmux, "f")
    tmux.wait_for("━ IG", 120)

    keys(tmux, "m")
    screen = tmux.wait_for("method mask ", 10)
    row = next(line for line in screen.splitlines() if "method mask " in line)
    assert "steps 150" in row and "points" not in row  # the mask's steps, the engine's default shown
    keys(tmux, "t")  # the task field, then the steps field (the points field is hidden)
    time.sleep(0.5)
    to_field(tmux, str(MASK_STEPS), rf"steps {MASK_STEPS} ")
    keys(tmux, "Enter")
    wait_for_match(tmux, r"\d+% · mask lambda \d+: loss", 60)  # its training, in the info row
    screen = tmux.wait_for("━ mask", 120)

    # the three curves together, and the mask circuit: lambda, plain, per-position nodes
    assert "━ attribution  ━ IG  ━ mask" in screen and "┊ shown" in screen
    assert re.search(r"\d+ nodes? \(\d+ ε\) · lambda \d+ · faithfulness \S+ \(plain \S+\)", screen), screen
    assert re.search(r"[├└]─ .. ?(resid_mid|mlp_out) (#\d+|ε)@\d+ ", screen), screen
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    quit_cleanly(tmux)
