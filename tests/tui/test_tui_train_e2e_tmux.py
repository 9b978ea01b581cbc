"""End to end: two SAE runs started from the Training pane of the real `saescope`
command in tmux at 80x24, typed at like a person, training side by side with
their curves on screen, then a quit while they train that stops them
(checkpointed); a run that outlives the app and its engine; and feature emergence
growing live in the emergence view, then the feature map of a finished run. Uses
the helpers of `test_tui_e2e_tmux`.

Notes
- Keys go one `send-keys` at a time with a short pause: a burst of keys in one
  write can reach the app as pasted text, and Tab would not move the focus.
- The app starts in a temporary folder, so the runs land in its `runs/`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import sys
import time

from tests.tui.test_tui_e2e_tmux import Tmux, pytestmark, quit_cleanly, tmux  # noqa: F401 (fixture)

TRAIN_TIMEOUT = 120.0


def keys(t: Tmux, *sequence: str, pause: float = 0.1) -> None:
    for key in sequence:
        t("send-keys", "-t", "app", key)
        time.sleep(pause)


def test_two_runs_from_the_training_pane_in_tmux(tmux, tmp_path):  # noqa: F811 (a fixture)
    tmux.start(f"bash -c {shlex.quote(f'cd {shlex.quote(str(tmp_path))} && exec saescope')}")
    tmux.wait_for("mini-gelu-1l")
    keys(tmux, "C-p")
    keys(tmux, "Start training", pause=1.0)  # the palette searches as it is typed
    keys(tmux, "Enter")
    screen = tmux.wait_for("eval tok", 10)
    assert "blocks.0.hook_mlp_out" in screen and "batchtopk" in screen
    # d_sae, k, (l1, seed, ctx), tokens, batch, (ranks, ckpt), eval tokens; each field starts selected.
    keys(tmux, "32", "Tab", "4", "Tab", "Tab", "Tab", "Tab", "20k", "Tab", "256", "Tab", "Tab", "Tab", "512",
         pause=0.3)
    keys(tmux, *["BTab"] * 13, "Space")  # back to the first architecture, relu: tick it (topk already is)
    keys(tmux, *["Tab"] * 4, "Enter")  # to d_sae, and start

    def run_rows(screen: str) -> list[str]:
        # Rows of the runs table (names may be shortened: `relu-b…`), with their step
        # count: the message line ("finished relu-b0-…, topk-b0-…") names them too.
        return [line for line in screen.splitlines()
                if re.search(r"(relu|topk)-b.*\s\d+/\d+\s.*\s(running|finished)\s*$", line)]

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
    assert any(" relu " in r for r in rows) and any(" topk " in r for r in rows), screen
    assert "explained variance" in screen and "quiet fraction" in screen and "L0 (log)" in screen

    # Quitting while they train asks first; "s" stops them (checkpointed) and quits.
    tmux("send-keys", "-t", "app", "C-q")
    deadline = time.monotonic() + 10
    while "Leave running" not in (screen := tmux.screen()) and "EXIT=" not in screen:
        assert time.monotonic() < deadline, screen
        time.sleep(0.2)
    if "Leave running" in screen:  # (on a fast machine they may have finished already)
        keys(tmux, "s")
    tmux.wait_for("EXIT=0", 60)
    for arch in ("relu", "topk"):
        folder = tmp_path / "runs" / f"{arch}-b0-mlp_out-1"
        assert (folder / "metrics.jsonl").exists()
        assert (folder / "checkpoint").exists() or (folder / "eval.json").exists()


def _step(screen: str, name: str) -> int | None:
    """The step count of the run whose (maybe shortened) name starts like `name` in the
    runs table (`123/312`)."""
    for line in screen.splitlines():
        if name[:6] in line:
            m = re.search(r"\s(\d+)/(\d+)\s", line)
            if m:
                return int(m.group(1))
    return None


def test_a_run_outlives_the_app_and_its_engine_in_tmux(tmux, tmp_path):  # noqa: F811 (a fixture)
    """A run started from the Training pane; its engine (reached through a command, as
    over ssh) killed with SIGKILL: `r` starts another, which finds the run still
    training. Then ctrl+q, "l": the app quits, the run goes on; the app opened again
    shows it live (its step count advancing) and then finished."""
    pidfile = tmp_path / "engine.pid"
    engine = f"sh -c 'echo $$ > {pidfile}; exec {sys.executable} -m engine engine serve --stdio'"
    # 0.25 s a step (312 steps) until the reopened app has seen the run live: long enough
    # to outlive the app on any machine; then no delay, so the run finishes at once.
    delay = tmp_path / "step-delay"
    delay.write_text("0.25")
    app = (f"cd {shlex.quote(str(tmp_path))} && SAESCOPE_TEST_STEP_DELAY={shlex.quote(str(delay))} "
           f"SAESCOPE_RUNS={shlex.quote(str(tmp_path / 'registry'))} exec saescope --engine {shlex.quote(engine)}")
    tmux.start(f"bash -c {shlex.quote(app)}")
    tmux.wait_for("mini-gelu-1l")
    keys(tmux, "C-p")
    keys(tmux, "Start training", pause=1.0)
    keys(tmux, "Enter")
    tmux.wait_for("eval tok", 10)
    # d_sae, k, (l1, seed, ctx), tokens, batch, (ranks, ckpt), eval tokens; then start
    keys(tmux, "32", "Tab", "4", "Tab", "Tab", "Tab", "Tab", "80k", "Tab", "256", "Tab", "Tab", "Tab", "512",
         "Enter", pause=0.3)
    name = "topk-b0-mlp_out-1"
    folder = tmp_path / "runs" / name
    deadline = time.monotonic() + 2 * TRAIN_TIMEOUT
    while (_step(tmux.screen(), name) or 0) < 3:
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.25)

    # The transport dies (the engine with it): the run goes on, a new engine finds it.
    os.kill(int(pidfile.read_text()), signal.SIGKILL)
    tmux.wait_for("died", 20)
    keys(tmux, "r")
    tmux.wait_for("train.follow", 60)  # the status bar: the new engine follows the run
    deadline = time.monotonic() + 60
    while (first := _step(tmux.screen(), name)) is None:  # its curves so far, replayed
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.25)
    time.sleep(3.0)
    later = _step(tmux.screen(), name)
    assert first is not None and later is not None and later > first, tmux.screen()

    # ctrl+q asks; "l" leaves the run running.
    keys(tmux, "C-q")
    tmux.wait_for("Leave running", 10)
    keys(tmux, "l")
    tmux.wait_for("EXIT=0", 30)
    state = json.loads((folder / "state.json").read_text())
    assert state["state"] == "running"
    from engine.train.detached import pid_alive

    assert pid_alive(state["pid"])
    steps_then = sum(1 for _ in (folder / "metrics.jsonl").open())
    time.sleep(2.0)
    assert sum(1 for _ in (folder / "metrics.jsonl").open()) > steps_then  # still training

    # Opened again: the run is there, live, and then finished.
    tmux.restart(f"bash -c {shlex.quote(app)}")
    tmux.wait_for("train.follow", 60)  # found at connection, followed
    keys(tmux, "C-p")
    keys(tmux, "Compare runs", pause=1.0)  # the Training pane (the runs table is on top)
    keys(tmux, "Enter")
    tmux.wait_for("running", 30)
    deadline = time.monotonic() + 60
    while (first := _step(tmux.screen(), name)) is None:
        assert time.monotonic() < deadline, tmux.screen()
        time.sleep(0.25)
    delay.write_text("0")
    deadline = time.monotonic() + 3 * TRAIN_TIMEOUT
    while True:
        screen = tmux.screen()
        if "finished" in screen:
            break
        assert time.monotonic() < deadline, screen
        time.sleep(0.5)
    last = _step(screen, name)
    assert first is not None and last == 312 and last > first, screen
    assert (folder / "eval.json").exists()
    quit_cleanly(tmux)


# The engine for the emergence walk: umap-learn hidden, so the feature map is a PCA
# (UMAP's first call in a process compiles for about half a minute on a busy box).
PCA_ENGINE = """import runpy, sys
sys.modules["umap"] = None  # importlib.util.find_spec("umap") is None: the map's auto method takes PCA
sys.argv = ["saescope", "engine", "serve", "--stdio"]
runpy.run_module("engine", run_name="__main__", alter_sys=True)
"""


def _emergence_plot(screen: str) -> str:
    """The emergence view's plot: the lines from its title down to its token labels."""
    lines = screen.splitlines()
    top = next((i for i, line in enumerate(lines) if "features formed" in line), None)
    return "" if top is None else "\n".join(lines[top:top + 14])


def test_emergence_grows_and_a_finished_runs_feature_map_in_tmux(tmux, tmp_path):  # noqa: F811 (a fixture)
    """TopK and ReLU side by side (d_sae 64, 40 steps of 256, a snapshot every 2 steps):
    the emergence view's curves grow while they train, are matched to the final
    decoders once they finish, and `p` shows the feature map's clusters."""
    engine = tmp_path / "pca_engine.py"
    engine.write_text(PCA_ENGINE)
    delay = tmp_path / "step-delay"
    delay.write_text("0.3")  # slow steps until the curve has been seen growing
    app = (f"cd {shlex.quote(str(tmp_path))} && SAESCOPE_TEST_STEP_DELAY={shlex.quote(str(delay))} "
           f"exec saescope --engine {shlex.quote(f'{sys.executable} {engine}')}")
    tmux.start(f"bash -c {shlex.quote(app)}")
    tmux.wait_for("mini-gelu-1l")
    keys(tmux, "C-p")
    keys(tmux, "Start training", pause=1.0)
    keys(tmux, "Enter")
    tmux.wait_for("snap every", 10)
    # d_sae, k, (l1, seed, ctx), tokens, batch, (ranks, ckpt), eval tokens, (out), snap every
    keys(tmux, "64", "Tab", "4", "Tab", "Tab", "Tab", "Tab", "10240", "Tab", "256", "Tab", "Tab", "Tab", "512",
         "Tab", "Tab", "2", pause=0.3)
    keys(tmux, *["BTab"] * 15, "Space")  # back to the first architecture, relu: tick it (topk already is)
    keys(tmux, *["Tab"] * 4, "Enter")  # to d_sae, and start
    tmux.wait_for("relu-b0-mlp_out-1", 10)
    keys(tmux, "e")

    deadline = time.monotonic() + TRAIN_TIMEOUT
    first = ""
    while True:  # two pictures of the curves while they train, the second one grown
        screen = tmux.screen()
        plot = _emergence_plot(screen)
        live = "until finished" in screen and " running" in screen and sum(ch in plot for ch in "⠁⠂⠄⡀⠒⠤⣀⠉") >= 2
        if live and not first:
            first = plot
        elif live and plot != first:
            break
        assert time.monotonic() < deadline, f"no growing emergence curve; the screen:\n{screen}"
        time.sleep(0.25)
    lines = screen.splitlines()
    assert len(lines) <= 24 and all(len(line) <= 80 for line in lines)
    assert "features formed (cos ≥ 0.9 to the final decoder)" in screen and "100%" in screen
    delay.write_text("0")

    deadline = time.monotonic() + TRAIN_TIMEOUT
    while (screen := tmux.screen()).count(" finished") < 2 or "until finished" in screen:
        assert time.monotonic() < deadline, f"the runs did not finish; the screen:\n{screen}"
        time.sleep(0.25)
    for arch in ("relu", "topk"):
        assert (tmp_path / "runs" / f"{arch}-b0-mlp_out-1" / "emergence.json").exists()

    keys(tmux, "p")  # the selected run, relu (the first of the job), has finished: its map
    screen = tmux.wait_for("64 features · PCA", 60)
    assert "feature map of relu-b0-mlp_out-1" in screen
    screen = tmux.wait_for("  1 ", 10)  # the clusters listed, largest first
    assert re.search(r"^│\s+0\s+\d+ features", screen, re.M), screen
    keys(tmux, "q")  # the map closes on q as on escape (a lone Escape can read as Alt+key)
    deadline = time.monotonic() + 10
    while "feature map of" in (screen := tmux.screen()):
        assert time.monotonic() < deadline, screen
        time.sleep(0.2)
    quit_cleanly(tmux)
