"""End to end: two SAE runs started from the Training pane of the real `saescope`
command in tmux at 80x24, typed at like a person, training side by side with
their curves on screen, then a clean quit while they train (the engine
checkpoints them). Uses the helpers of `test_tui_e2e_tmux`.

Notes
- Keys go one `send-keys` at a time with a short pause: a burst of keys in one
  write can reach the app as pasted text, and Tab would not move the focus.
- The app starts in a temporary folder, so the runs land in its `runs/`.
"""

from __future__ import annotations

import shlex
import time

from tests.tui.test_tui_e2e_tmux import Tmux, pytestmark, quit_cleanly, tmux  # noqa: F401 (fixture)

TRAIN_TIMEOUT = 120.0


def keys(t: Tmux, *sequence: str, pause: float = 0.1) -> None:
    for key in sequence:
        t("send-keys", "-t", "app", key)
        time.sleep(pause)


def test_two_runs_from_the_training_pane_in_tmux(tmux, tmp_path):
    tmux.start(f"bash -c {shlex.quote(f'cd {shlex.quote(str(tmp_path))} && exec saescope')}")
    tmux.wait_for("mini-gelu-1l")
    keys(tmux, "C-p")
    keys(tmux, "Start training", pause=1.0)  # the palette searches as it is typed
    keys(tmux, "Enter")
    screen = tmux.wait_for("eval tok", 10)
    assert "blocks.0.hook_mlp_out" in screen and "batchtopk" in screen
    # d_sae, k, (l1, seed, ctx), tokens, batch, (ckpt), eval tokens; each field starts selected.
    keys(tmux, "32", "Tab", "4", "Tab", "Tab", "Tab", "Tab", "20k", "Tab", "256", "Tab", "Tab", "512")
    keys(tmux, *["BTab"] * 12, "Space")  # back to the first architecture, relu: tick it (topk already is)
    keys(tmux, *["Tab"] * 4, "Enter")  # to d_sae, and start

    def run_rows(screen: str) -> list[str]:
        return [line for line in screen.splitlines()
                if "-b0-mlp_" in line and ("running" in line or "finished" in line)]

    def curves_drawn(screen: str) -> bool:  # plot titles, and points (braille cells) under them
        return "loss (log)" in screen and sum(ch in screen for ch in "⠁⠂⠄⡀⠒⠤⣀⠉") >= 2

    deadline = time.monotonic() + TRAIN_TIMEOUT
    while True:  # both runs reporting, with their curves
        screen = tmux.screen()
        if len(run_rows(screen)) == 2 and curves_drawn(screen):
            break
        assert time.monotonic() < deadline, f"no curves within {TRAIN_TIMEOUT:.0f} s; the screen:\n{screen}"
        time.sleep(0.25)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    rows = run_rows(screen)
    assert any(" relu " in r for r in rows) and any(" topk " in r for r in rows)
    assert "explained variance" in screen and "dead fraction" in screen and "L0 (log)" in screen

    # Quitting while they train: the engine checkpoints them at its end of input.
    quit_cleanly(tmux)
    for arch in ("relu", "topk"):
        folder = tmp_path / "runs" / f"{arch}-b0-mlp_out-1"
        assert (folder / "metrics.jsonl").exists()
        assert (folder / "checkpoint").exists() or (folder / "eval.json").exists()
