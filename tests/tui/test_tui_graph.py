"""The Graph pane driven by the pilot: against a real engine (the shared `sae_engine`),
F7, a feature out of range refused with the engine's message, feature 5's
neighbourhood loaded, a neighbour opened (its own neighbours, from the engine, with
the cycle back to the root marked), `c` comparing with the other seed (the partner,
the matches and the figures equal to a `graph.compare` the test decodes itself),
and `i` on the partner opening the other SAE's feature in the Inspector; and a
layout snapshot at 80x24 of constructed results (no engine).

The SAEs are the shipped TopK seeds (weights/saes/mlp_out-topk and -s1), whose
indexes hold co-occurrence: read, never rebuilt."""

from __future__ import annotations

import asyncio

import msgspec
from textual.app import App
from textual.widgets import Footer, TabbedContent, TabPane

from engine.protocol import GraphComparison, GraphNode, GraphStats
from tests.tui.graph_fixture import COMPARISON, NODES, PATH, STATS
from tests.tui.sae_setup import REPO, TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.client import EngineClient
from tui.controllers.graph import GraphCompared, GraphRootShown, GraphStatsShown
from tui.link import EngineLink
from tui.target import EngineTarget
from tui.widgets.graph_matches import MatchTable
from tui.widgets.graph_pane import GraphPane
from tui.widgets.inspector_pane import InspectorPane

SAE, OTHER = str(REPO / "weights" / "saes" / "mlp_out-topk"), str(REPO / "weights" / "saes" / "mlp_out-topk-s1")
FEATURE = 5


def shown(pane, selector: str) -> str:
    return str(pane.query_one(selector).render())


async def decoded(address: str, method: str, params: dict, kind: type):
    """The engine's reply to `method`, decoded here into `kind` (not through the app's client)."""
    client = EngineClient(EngineTarget.tcp(address, token=TOKEN))
    await client.start()
    try:
        reply = await client.request(method, params)
    finally:
        await client.close()
    assert reply.status == "ok", reply.error
    return msgspec.convert(reply.result, kind)


def test_graph_pane_neighbours_compare_inspect(make_app, model_loaded, wait_until, sae_engine, monkeypatch):
    monkeypatch.delenv("SAESCOPE_WEIGHTS", raising=False)  # the pane's defaults: the shipped seeds

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            await pilot.press("f7")
            pane = app.query_one(GraphPane)
            await wait_until(pilot, lambda: app.focused is pane.feature_input, 5, "the Graph pane")
            assert app.query_one(TabbedContent).active == "graph"
            assert (pane.path, pane.other) == (SAE, OTHER)

            # a feature out of range: the engine's message, in the pane; nothing loaded
            await pilot.press(*"5000", "enter")
            info = pane.query_one("#graph-info")
            await wait_until(pilot, lambda: info.has_class("-error"), 30, "the error")
            assert "out of range" in shown(pane, "#graph-info") and "0..1023" in shown(pane, "#graph-info")
            assert pane.loaded is None

            # feature 5: the graph's figures and the feature's neighbours, as the engine says
            pane.feature_input.value = ""
            await pilot.press(*str(FEATURE), "enter")
            await wait_until(pilot, lambda: pane.loaded == (SAE, FEATURE), 30, "the neighbourhood")
            await pilot.pause(0.2)
            tree = pane.tree
            assert app.focused is tree and not info.has_class("-error")
            stats = await decoded(sae_engine.address, "graph.stats", {"path": SAE}, GraphStats)
            header = shown(pane, "#graph-stats")
            assert f"{stats.nodes} nodes" in header and f"{stats.edges} edges" in header
            assert f"mod {stats.modularity:.3f}" in header and stats.rule in str(pane.query_one("#graph-stats").tooltip)
            node = await decoded(sae_engine.address, "graph.node", {"path": SAE, "feature": FEATURE, "n": 12},
                                 GraphNode)
            assert str(tree.root.label).startswith(f"#{FEATURE} ")
            assert [c.data.feature for c in tree.root.children] == [n.feature for n in node.neighbours]
            assert "┐" in pane.plot.drawn and "0.0" in pane.plot.drawn  # the degree plot's frame and log axis

            # a neighbour opened: its own neighbours arrive from the engine; the root among them is marked ↺
            first = tree.root.children[0]
            await pilot.press("down", "enter")
            await wait_until(pilot, lambda: first.data.filled, 30, "the neighbour's neighbours")
            await pilot.pause(0.1)
            second = await decoded(sae_engine.address, "graph.node",
                                   {"path": SAE, "feature": first.data.feature, "n": 12}, GraphNode)
            assert [c.data.feature for c in first.children] == [n.feature for n in second.neighbours]
            back = [c for c in first.children if c.data.feature == FEATURE]
            assert back and back[0].data.on_path and not back[0].allow_expand and "↺" in str(back[0].label)

            # `c`: the selected neighbour compared with the other seed; all as `graph.compare` says
            await pilot.press("c")
            await wait_until(pilot, lambda: pane.comparison is not None, 30, "the comparison")
            await pilot.pause(0.2)
            expected = await decoded(sae_engine.address, "graph.compare",
                                     {"path": SAE, "other": OTHER, "feature": first.data.feature, "n": 10},
                                     GraphComparison)
            got = pane.comparison.comparison
            assert got == expected and got.partner is not None
            p = expected.partner
            pair = shown(pane, "#graph-pair-b")
            assert f"mlp_out-topk-s1 #{p.feature}" in pair and f"cos {p.score:.2f}" in pair
            assert f"#{first.data.feature}" in shown(pane, "#graph-pair-a")
            figures = shown(pane, "#graph-figures")
            assert f"shared {100 * expected.shared_fraction:.0f}%" in figures
            assert f"mean cos {expected.mean_cosine:.3f}" in figures
            for a in expected.structural:
                assert f"{100 * a.top1:.0f}%/{100 * a.top10:.0f}%" in figures
            jsd = shown(pane, "#graph-jsd")
            assert f"JSD {expected.degree_divergence:.3f}" in jsd and f"{expected.random.divergence_mean:.3f}" in jsd
            table = pane.matches
            assert table.matches == [p, *expected.by_structure[:3]]

            # `m` into the matches, `i` on the partner: the other SAE's feature in the Inspector
            await pilot.press("m")
            assert isinstance(app.focused, MatchTable) and table.selected == p
            await pilot.press("i")
            inspector = app.query_one(InspectorPane)
            await wait_until(pilot, lambda: inspector.current == (OTHER, p.feature), 5, "the Inspector")
            assert app.query_one(TabbedContent).active == "inspector" and inspector.path == OTHER
            await wait_until(pilot, lambda: inspector.control.shown == (OTHER, p.feature), 30, "the page")

    asyncio.run(main())


class GraphOnly(App[None]):
    """The Graph pane as the app frames it (a tab, the footer), with constructed
    results and no engine."""

    CSS_PATH = "../../tui/app.tcss"

    def compose(self):
        link = EngineLink(EngineTarget.local(), "default", self.post_message)  # never started
        with TabbedContent(id="panes"):
            with TabPane("Graph", id="graph"):
                yield GraphPane(link)
        yield Footer()

    def on_mount(self) -> None:
        pane = self.query_one(GraphPane)
        for node in NODES.values():
            pane.control.remember(PATH, node)  # opening a row reads these
        pane.post_message(GraphStatsShown(PATH, STATS))
        pane.post_message(GraphRootShown(PATH, NODES[5]))
        pane.post_message(GraphCompared(COMPARISON, PATH, pane.other))


def test_graph_80x24(snap_compare, monkeypatch):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", "/w")  # the SAE fields' paths, whatever the checkout

    async def run_before(pilot) -> None:
        pane = pilot.app.query_one(GraphPane)
        pane.feature_input.cursor_blink = False
        await pilot.pause(0.2)
        await pilot.press("down", "enter")  # the first neighbour opened: its neighbours, the root marked ↺
        await pilot.pause(0.2)

    assert snap_compare(GraphOnly(), terminal_size=(80, 24), run_before=run_before)
