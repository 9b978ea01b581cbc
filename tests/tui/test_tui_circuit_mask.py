"""The Circuit pane's mask method, driven by the pilot against the real engine (the
shared `sae_engine`, its resid_mid and mlp_out SAEs): `m` cycles attribution → ig →
mask, the three searches' faithfulness curves drawn together with a legend naming
each, the mask circuit (lambda, plain m(C)/m(M), per-position nodes) in the tree
with the nodes `circuit.find` gives for that lambda, `+` stepping along the lambda
grid; a mask sweep cancelled partway keeping the masks it finished, and a mask
trained for another errors setting (`e`) cancelled in turn. Without an engine: the
controller sends `mask_steps` with mask searches only, and keeps each method's
curves for one task and one site list.

Mask training is the slow part (every discovery row in every Adam step), so the
task is was_were cut to its first 9 pairs (6 to find the circuit, 3 held out) and
the pane's `steps` is 20: enough for the masks to drop latents, a sweep of 12 masks
in well under a minute here. Attribution and ig sweep 5 points up to 40 nodes."""

from __future__ import annotations

import asyncio
from pathlib import Path

from rich.text import Text

from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.circuit_layout import CircuitLayout
from tui.circuit_plot import COLOURS, curve_plot
from tui.target import EngineTarget
from tui.widgets.circuit_pane import CircuitPane

TASK_LINES = 9
MASK_STEPS = 20
WAS_WERE = Path(__file__).resolve().parents[2] / "weights" / "tasks" / "was_were.jsonl"


def small_task(folder: Path) -> str:
    path = folder / "was_were_9.jsonl"
    path.write_text("".join(WAS_WERE.read_text().splitlines(keepends=True)[:TASK_LINES]))
    return str(path)


def shown(pane, selector: str) -> str:
    return str(pane.query_one(selector).render())


def tree_ids(layout: CircuitLayout) -> set[str]:
    """Every node the tree can show: down the edges from the metric, and the groups."""
    seen, rows = set(), layout.children(layout.root)
    while rows:
        row = rows.pop()
        if row.kind == "unconnected":
            rows.extend(layout.children(row))
        elif row.node.id not in seen:
            seen.add(row.node.id)
            rows.extend(layout.children(row))
    return seen


async def start(pilot, app, model_loaded, wait_until, task: str) -> CircuitPane:
    await model_loaded(pilot)
    await pilot.press("f6")
    pane = app.query_one(CircuitPane)
    await wait_until(pilot, lambda: app.focused is pane.task_input, 5, "the Circuit pane")
    pane.task_input.value = task
    pane.query_one("#circuit-points").value = "5"
    pane.control.max_nodes = 40
    pane.tree.focus()  # `m`, `f`, `c` are the pane's keys, not letters typed in the task
    await pilot.pause(0.1)
    return pane


async def search(pilot, pane, wait_until, method: str, timeout: float = 90) -> None:
    while pane.control.method != method:
        await pilot.press("m")
    old = pane.state
    await pilot.press("f")
    await wait_until(pilot, lambda: pane.state is not old and not pane.control.searching, timeout, method)
    await pilot.pause(0.2)
    assert pane.state.method == method and pane.state.complete, shown(pane, "#circuit-info")


def test_three_methods_side_by_side_and_a_mask_circuit(make_app, model_loaded, wait_until, sae_engine,
                                                       monkeypatch, tmp_path):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))
    task = small_task(tmp_path)

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = await start(pilot, app, model_loaded, wait_until, task)
            assert shown(pane, "#circuit-method") == "attribution"
            await search(pilot, pane, wait_until, "attribution")
            await search(pilot, pane, wait_until, "ig")
            assert "threshold" in shown(pane, "#circuit-summary")

            # `m` once more: the mask, its steps field in place of the sweep's points
            await pilot.press("m")
            assert shown(pane, "#circuit-method") == "mask"
            steps, points = pane.query_one("#circuit-steps"), pane.query_one("#circuit-points")
            assert steps.display and not points.display
            steps.value = str(MASK_STEPS)
            seen: list[str] = []  # the info row while the masks train
            old = pane.state
            await pilot.press("f")
            await wait_until(pilot, lambda: seen.append(shown(pane, "#circuit-info")) or pane.state is not old,
                             120, "the mask circuit")
            await pilot.pause(0.2)
            s = pane.state
            f = s.found
            assert s.method == "mask" and s.complete and f.per_position
            assert any("mask lambda" in line and "latents" in line for line in seen), seen[-5:]
            assert [p.threshold for p in s.curve] == [1, 4, 16, 64, 256, 1024]  # the lambda grid
            assert len(s.curve_features) == 6

            # the summary: lambda, not a threshold; plain beside faithfulness
            summary = shown(pane, "#circuit-summary")
            assert f"lambda {f.figures.threshold:.3g}" in summary and "threshold" not in summary
            assert f"faithfulness {f.figures.faithfulness:.3f} (plain {f.figures.plain:.3f})" in summary

            # the plot: the three methods' curves with error nodes, a legend naming each
            curves = pane.control.curves_shown()
            assert list(curves) == ["attribution", "ig", "mask"] and all(curves.values())
            assert curves["mask"] == s.curve
            width, height = pane.plot.content_size
            ansi = curve_plot(curves, f.figures.nodes, width, height)
            assert Text.from_ansi(ansi).plain == pane.plot.drawn  # what is on screen
            assert all(f"38;5;{COLOURS[m]}m" in ansi for m in curves)
            legend = shown(pane, "#circuit-legend")
            assert all(name in legend for name in ("attribution", "IG", "mask")) and "╌" not in legend

            # the tree: the mask circuit's nodes, per position; those circuit.find gives for this lambda
            layout = pane.tree.layout_
            assert layout.found is f and tree_ids(layout) == {n.id for n in f.nodes}
            assert all("@" in n.id for n in f.nodes)
            first = next(c for c in pane.tree.root.children if c.data.kind == "node")
            assert "@" in str(first.label)
            direct = await app.link.run("circuit.find", {
                "task": task, "saes": s.paths, "circuit": "test-mask", "method": "mask",
                "mask_steps": MASK_STEPS, "threshold": f.figures.threshold}, needs_model=True)
            assert {n.id for n in direct.nodes} == {n.id for n in f.nodes}

            # `+`: the next lambda of the grid, a smaller circuit (the mask was trained in the sweep)
            lam = f.figures.threshold
            key, want = ("plus", lam * 4) if lam < 1024 else ("minus", lam / 4)
            await pilot.press(key)
            await wait_until(pilot, lambda: s.found.figures.threshold == want, 30, "the next lambda")
            await pilot.pause(0.1)
            assert f"lambda {want:.3g}" in shown(pane, "#circuit-summary")
            assert tree_ids(pane.tree.layout_) == {n.id for n in s.found.nodes}

    asyncio.run(main())


def test_a_cancelled_mask_sweep_keeps_its_masks(make_app, model_loaded, wait_until, sae_engine, monkeypatch,
                                                tmp_path):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))
    task = small_task(tmp_path)

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            pane = await start(pilot, app, model_loaded, wait_until, task)
            await pilot.press("m", "m")
            pane.query_one("#circuit-steps").value = str(MASK_STEPS)
            await pilot.press("f")
            # the second mask training: the first one is a point of the sweep
            await wait_until(pilot, lambda: "mask lambda 4:" in shown(pane, "#circuit-info"), 60, "the second mask")
            await pilot.press("c")
            await wait_until(pilot, lambda: pane.state is not None, 60, "the partial sweep")
            await pilot.pause(0.2)
            s = pane.state
            assert s.method == "mask" and not s.complete and not pane.control.searching
            assert 1 <= len(s.curve) < 6 and [p.threshold for p in s.curve] == [1, 4, 16, 64, 256][:len(s.curve)]
            assert s.curve_features == []  # the errors-at-mean half never started
            assert shown(pane, "#circuit-summary").rstrip().endswith("partial")
            assert "cancelled" in shown(pane, "#circuit-info")
            assert tree_ids(pane.tree.layout_) == {n.id for n in s.found.nodes}
            assert pane.control.curves_shown() == {"mask": s.curve}

            # `e`: error terms at their means, a lambda not trained yet: it trains (progress), `c` stops it
            shown_before = s.found
            await pilot.press("e")
            await wait_until(pilot, lambda: "mask lambda" in shown(pane, "#circuit-info"), 30, "the mask training")
            assert "c cancels" in shown(pane, "#circuit-info")
            await pilot.press("c")
            await wait_until(pilot, lambda: "Cancelled" in shown(pane, "#circuit-info"), 30, "the cancel")
            assert s.found is shown_before and s.found.errors and not pane.control.thresholding
            assert pane.control.wanted == (s.found.figures.threshold, True)

    asyncio.run(main())


class FakeLink:
    """Just enough of `EngineLink` for the controller's searches: records what is sent."""

    engine_pid = 1

    def __init__(self, replies: list) -> None:
        self.replies, self.sent = replies, []

    async def run(self, method, params, **kwargs):
        self.sent.append((method, params))
        return self.replies.pop(0)

    def log(self, text: str) -> None:
        pass


class FakeSaes:
    async def open(self, path, on_progress=None) -> None:
        pass


def test_mask_steps_go_with_mask_searches_only_and_curves_are_kept_per_task():
    from tests.tui.circuit_fixture import found, mask_found
    from tui.controllers.circuit import CircuitController

    async def main():
        link = FakeLink([found(), mask_found(), found()])
        c = CircuitController(link, FakeSaes(), lambda message: None)
        c.mask_steps = 20
        await c.find("was_were", ["/a", "/b"])
        assert "mask_steps" not in link.sent[-1][1]
        c.switch_method(), c.switch_method()
        assert c.method == "mask"
        await c.find("was_were", ["/a", "/b"])
        assert link.sent[-1][1]["method"] == "mask" and link.sent[-1][1]["mask_steps"] == 20
        assert list(c.curves_shown()) == ["attribution", "mask"]
        c.switch_method()
        await c.find("close_paren", ["/a", "/b"])  # another task: only its own curve
        assert list(c.curves_shown()) == ["attribution"] and c.curves_shown()["attribution"] == found().curve

    asyncio.run(main())
