"""The Circuit pane driven by the pilot: against a real engine (the shared
`sae_engine`), F6, a search on was_were through two sites, the tree, the threshold
stepped with `+`/`-` and the figures following, error nodes out and in with `e`, a
node verified with `v`, a feature opened in the Inspector with `i`, and an engine
error shown whole; and a layout snapshot at 80x24 of a constructed result (no engine).

The search is a small sweep (5 points typed in the pane, `max_nodes` 40) to keep the
suite fast."""

from __future__ import annotations

import asyncio

from textual.app import App
from textual.widgets import Footer, TabbedContent, TabPane

from tests.tui.circuit_fixture import found
from tests.tui.sae_setup import TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.controllers.circuit import CircuitShown, CircuitState
from tui.link import EngineLink
from tui.sae_session import SaeSession
from tui.target import EngineTarget
from tui.widgets.circuit_pane import CircuitPane
from tui.widgets.inspector_pane import InspectorPane


def shown(pane, selector: str) -> str:
    return str(pane.query_one(selector).render())


async def move_to(pilot, tree, target) -> None:
    while tree.cursor_node is not target:
        await pilot.press("down" if tree.cursor_line < target.line else "up")


def test_circuit_search_threshold_verify_inspect(make_app, model_loaded, wait_until, sae_engine, monkeypatch):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))  # the default sites: the test's copies

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            await pilot.press("f6")
            pane = app.query_one(CircuitPane)
            await wait_until(pilot, lambda: app.focused is pane.task_input, 5, "the Circuit pane")
            assert app.query_one(TabbedContent).active == "circuit"
            assert pane.sites == [sae_engine.up, sae_engine.down] and pane.task_input.value == "was_were"
            pane.query_one("#circuit-points").value = "5"  # a small sweep: a fast test
            pane.control.max_nodes = 40

            # an engine error, whole, in the info row
            pane.task_input.value = "no_such_task"
            await pilot.press("enter")
            info = pane.query_one("#circuit-info")
            await wait_until(pilot, lambda: info.has_class("-error"), 30, "the error")
            assert "no_such_task" in shown(pane, "#circuit-info") and pane.state is None

            # the search runs while the user is elsewhere: its end does not take their focus
            pane.task_input.value = "was_were"
            await pilot.press("enter", "f2")
            prompt = app.focused
            await wait_until(pilot, lambda: pane.state is not None, 90, "the circuit")
            await pilot.pause(0.2)
            assert app.focused is prompt and app.query_one(TabbedContent).active == "predict"
            await pilot.press("f6")
            await pilot.pause(0.2)
            tree, s = pane.tree, pane.state
            assert app.focused is tree and not info.has_class("-error")
            assert len(s.curve) == 5 and s.complete  # the points typed
            assert str(tree.root.label).startswith("metric ")
            top = [c.data for c in tree.root.children if c.data.kind == "node"]
            assert top and all(r.parent == "metric" for r in top)
            assert {r.node.site for r in top} <= {"resid_mid", "mlp_out"}
            before = shown(pane, "#circuit-summary")
            f = s.found.figures
            assert f"{f.nodes} nodes" in before and f"faithfulness {f.faithfulness:.3f}" in before
            assert "1" in pane.plot.drawn and "┐" in pane.plot.drawn  # the curves' frame and axis

            # `+`/`-`: the next smaller / larger circuit of the sweep; the summary follows
            key = "plus" if f.threshold < max(p.threshold for p in s.curve) else "minus"
            await pilot.press(key)
            await wait_until(pilot, lambda: s.found.figures.threshold != f.threshold, 30, "another threshold")
            await pilot.pause(0.1)
            after = shown(pane, "#circuit-summary")
            g = s.found.figures
            assert after != before and f"faithfulness {g.faithfulness:.3f}" in after and f"{g.nodes} node" in after
            await pilot.press("minus" if key == "plus" else "plus")
            await wait_until(pilot, lambda: s.found.figures.threshold == f.threshold, 30, "the threshold back")

            # `e`: error nodes out, then back in
            await pilot.press("e")
            await wait_until(pilot, lambda: not s.found.errors, 30, "a circuit without error nodes")
            await pilot.pause(0.1)
            assert "(no ε)" in shown(pane, "#circuit-summary")
            await pilot.press("e")
            await wait_until(pilot, lambda: s.found.errors, 30, "error nodes back")

            # `v` on a feature node: its exact effect (and its edge's) beside the estimates
            await pilot.pause(0.2)
            row = next(c for c in tree.root.children if c.data.kind == "node" and c.data.node.feature is not None)
            await move_to(pilot, tree, row)
            await pilot.press("v")
            node = row.data.node
            await wait_until(pilot, lambda: node.id in s.verified_nodes, 30, "the verification")
            await pilot.pause(0.1)
            exact = s.verified_nodes[node.id].exact
            label = str(tree.cursor_node.label)
            assert f"={exact:+.3f}".replace("-", "−") in label and "exact" in shown(pane, "#circuit-info")

            # `i`: that feature in the Inspector
            await pilot.press("i")
            inspector = app.query_one(InspectorPane)
            path = s.paths[node.site_index]
            await wait_until(pilot, lambda: inspector.current == (path, node.feature), 5, "the Inspector")
            assert app.query_one(TabbedContent).active == "inspector"

    asyncio.run(main())


class CircuitOnly(App[None]):
    """The Circuit pane as the app frames it (a tab, the footer), with a constructed
    result and no engine."""

    CSS_PATH = "../../tui/app.tcss"

    def __init__(self, complete: bool = True) -> None:
        super().__init__()
        self.complete = complete

    def compose(self):
        link = EngineLink(EngineTarget.local(), "default", self.post_message)  # never started
        with TabbedContent(id="panes"):
            with TabPane("Circuit", id="circuit"):
                yield CircuitPane(link, SaeSession(link))
        yield Footer()

    def on_mount(self) -> None:
        pane = self.query_one(CircuitPane)
        f = found(self.complete)
        pane.sites = [site.path for site in f.sites]
        pane.control.state = CircuitState("fixture", f.task, pane.sites, f, f.curve, f.curve_features, f.complete,
                                          None)
        pane.post_message(CircuitShown("partial" if not f.complete else "", new=True))


def test_circuit_80x24(snap_compare):
    async def run_before(pilot) -> None:
        pane = pilot.app.query_one(CircuitPane)
        pane.task_input.cursor_blink = False
        await pilot.pause(0.2)
        pane._draw_sites()
        await pilot.press("down", "enter")  # the first node opened: its upstream nodes
        await pilot.pause(0.2)

    assert snap_compare(CircuitOnly(), terminal_size=(80, 24), run_before=run_before)


def test_a_partial_sweep_is_marked_and_sites_are_typed_as_a_list():
    async def main():
        app = CircuitOnly(complete=False)
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.query_one(CircuitPane)
            await pilot.pause(0.2)
            assert shown(pane, "#circuit-summary").endswith("\npartial")  # on a line of its own at 80 columns
            assert str(pane.tree.root.label).endswith("partial sweep")
            assert app.focused is pane.tree

            # `s`: the sites as one line, upstream first; a pick from weights/saes is added at the end
            await pilot.press("s")
            await pilot.pause(0.1)
            field = app.screen.query_one("#sites-input")
            assert field.value == " ".join(site.path for site in found().sites)
            field.value = "'/w/saes/resid_pre-topk"  # an unclosed quote: said, the dialog stays
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert "Cannot read the list" in str(app.screen.query_one("#sites-error").render())
            field.value = "/w/saes/resid_pre-topk '/w/my saes/mlp_out-topk'"
            await pilot.press("enter")
            await pilot.pause(0.1)
            assert pane.sites == ["/w/saes/resid_pre-topk", "/w/my saes/mlp_out-topk"]
            assert "resid_pre-topk → mlp_out-topk" in shown(pane, "#circuit-sites")

    asyncio.run(main())
