"""End to end: the real `saescope` command in tmux at 80x24, attached to the shared
listening engine, used like a person: F7 shows the Graph pane, feature 5's
neighbourhood in mlp_out-topk's co-activation graph, its first neighbour opened (5
comes back under it, marked ↺), `c` compares with the other seed (the partner and
the figures), and `m`, `i` open the partner in the Inspector, in mlp_out-topk-s1.

The SAEs are the shipped seeds (their indexes hold co-occurrence: read, never rebuilt)."""

from __future__ import annotations

import re
import shutil
import time

import pytest

from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tests.tui.test_tui_e2e_ablate import keys
from tests.tui.test_tui_e2e_tmux import Tmux, quit_cleanly, tmux  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]


def settled(tmux: Tmux, text: str, timeout: float) -> str:
    """The screen once `text` is on it and the redraw has finished (a redraw, a tab
    switch above all, reaches the terminal in steps)."""
    tmux.wait_for(text, timeout)
    time.sleep(0.5)
    return tmux.screen()


def test_graph_pane_in_tmux(tmux, sae_engine):  # noqa: F811 (fixtures)
    tmux.start(f"env -u SAESCOPE_WEIGHTS saescope --connect {sae_engine.address} --token {TOKEN}")
    tmux.wait_for("mini-gelu-1l · ")
    keys(tmux, "F7")
    screen = settled(tmux, "no feature yet", 10)
    assert "SAE  mlp_out-topk  vs  mlp_out-topk-s1" in screen and "Circuit  Graph" in screen

    keys(tmux, "5", "Enter")
    screen = settled(tmux, "nodes by degree", 60)
    assert re.search(r"\d+ nodes · \d+ edges · deg [\d.]+ · \d+ components", screen), screen
    assert "▼ #5 " in screen and "├─ ▶ #" in screen
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    first = re.search(r"├─ ▶ #(\d+)", screen).group(1)

    keys(tmux, "Down", "Enter")  # the first neighbour opened: its neighbours, 5 among them, marked ↺
    screen = settled(tmux, "↺", 30)
    assert f"▼ #{first} " in screen and re.search(r"│  ├─ {3}#5 +[\d.]+ ↺", screen), screen

    keys(tmux, "c")  # compared with the other seed: the partner, the figures, both distributions
    screen = settled(tmux, "partner ", 60)
    assert f"mlp_out-topk #{first}" in screen and "JSD " in screen and "random graphs" in screen
    assert re.search(r"shared \d+% at cos ≥ 0\.7 · mean cos 0\.\d+", screen), screen
    assert "━ mlp_out-topk ━ mlp_out-topk-s1" in screen and "struct" in screen
    partner = re.search(r"partner +#(\d+) +0\.\d+", screen).group(1)
    assert f"mlp_out-topk-s1 #{partner}" in screen

    keys(tmux, "m", "i")  # into the matches, the partner opened in the Inspector, in the other SAE
    screen = settled(tmux, f"#{partner} of 1024", 30)
    assert f"SAE  mlp_out-topk-s1  feature {partner}" in screen
    quit_cleanly(tmux)
