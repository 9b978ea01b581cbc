"""End to end: the real `saescope` command in tmux at 80x24, attached to the shared
listening engine, used like a person: F6 shows the Circuit pane, a search on
was_were through the default sites (a 5-point sweep, typed in the pane, to keep
the test short), the circuit's tree and figures, `+` (or `-` at the end of the
sweep) and the faithfulness changes, a feature node opened in the Inspector."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tests.tui.test_tui_e2e_ablate import keys
from tests.tui.test_tui_e2e_tmux import Tmux, quit_cleanly, tmux  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")]

# at 80 columns completeness goes to a second line when plain m(C)/m(M) is beside faithfulness
SUMMARY = re.compile(r"(\d+) nodes? \((\d+) ε\) · threshold (\S+) · faithfulness (\S+)(?: \(plain \S+\))?"
                     r"\s*(?:· )?completeness (\S+)")


def figures(tmux: Tmux) -> tuple[str, ...]:
    """The summary line's (nodes, error nodes, threshold, faithfulness, completeness)."""
    m = SUMMARY.search(tmux.screen())
    assert m, tmux.screen()
    return m.groups()


def wait_for_other_figures(tmux: Tmux, old: tuple[str, ...], timeout: float = 60) -> tuple[str, ...]:
    import time

    deadline = time.monotonic() + timeout
    while (new := figures(tmux))[2] == old[2]:
        if time.monotonic() > deadline:
            raise AssertionError(f"the threshold stayed at {old[2]}; the screen:\n{tmux.screen()}")
        time.sleep(0.25)
    return new


def test_circuit_pane_in_tmux(tmux, sae_engine):
    tmux.start(f"env SAESCOPE_WEIGHTS={sae_engine.weights} saescope --connect {sae_engine.address} --token {TOKEN}")
    tmux.wait_for("mini-gelu-1l · ")
    keys(tmux, "F6")
    screen = tmux.wait_for("no circuit yet", 10)
    assert "task was_were" in screen and "sites resid_mid-topk → mlp_out-topk" in screen

    keys(tmux, "Tab", "5", "Enter")  # 5 points in the sweep, then search
    screen = tmux.wait_for("faithfulness 0", 120)
    assert "metric logit" in screen and "├─" in screen and "┊ shown" in screen
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    before = figures(tmux)

    keys(tmux, "+")  # a higher threshold: the next smaller circuit of the sweep
    try:
        after = wait_for_other_figures(tmux, before, 30)
    except AssertionError:
        assert "smallest circuit of the sweep" in tmux.screen()
        keys(tmux, "-")
        after = wait_for_other_figures(tmux, before)
    assert after[0] != before[0] and after[3] != before[3], (before, after)  # size and faithfulness

    # the first feature row under the metric, opened in the Inspector
    screen = tmux.screen()
    rows = [line for line in screen.splitlines() if re.search(r"[├└]─ .. ?\S+ #\d+", line)]
    assert rows, screen
    lines = screen.splitlines()
    metric = next(i for i, line in enumerate(lines) if "metric logit" in line)
    target = next(i for i, line in enumerate(lines) if line == rows[0])
    keys(tmux, *["Down"] * (target - metric), "i")
    site, feature = re.search(r"(\w+) #(\d+)", rows[0]).groups()
    screen = tmux.wait_for(f"#{feature} of ", 30)
    assert f"{site}-topk" in screen
    quit_cleanly(tmux)
