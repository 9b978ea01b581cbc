"""The Circuit pane's controller without a screen: plain asyncio against the real
engine (the shared `sae_engine`, its resid_mid and mlp_out SAEs), the messages it
posts collected in a list. Errors come whole and leave the circuit shown alone; a
search on was_were shows a circuit with its curves; the threshold steps along the
sweep and the figures follow; error nodes go out and back; a node and its edge are
verified exactly; a cancelled search shows the sweep it finished, marked partial.

The sweeps are small (`points`, `max_nodes`) to keep the suite fast: the pane sends
the engine's defaults."""

from __future__ import annotations

import asyncio

import pytest

from tests.tui.sae_setup import engine_link, of_kind, sae_engine  # noqa: F401 (a fixture)
from tui.circuit_layout import signed
from tui.controllers.circuit import CircuitController, CircuitShown, CircuitStatus
from tui.sae_session import SaeSession

POINTS, MAX_NODES = 5, 40


def test_circuit_controller(sae_engine):
    async def main():
        posted: list = []
        link = await engine_link(sae_engine, posted)
        c = CircuitController(link, SaeSession(link), posted.append)
        c.points, c.max_nodes = POINTS, MAX_NODES
        paths = [sae_engine.up, sae_engine.down]
        try:
            assert c.find("  ", paths) is None and of_kind(posted, CircuitStatus)[-1].error
            assert c.find("was_were", []) is None and "sites" in of_kind(posted, CircuitStatus)[-1].text

            # engine errors come whole: a task that is not there, sites out of model order
            c.find("no_such_task", paths)
            await c.idle()
            error = of_kind(posted, CircuitStatus)[-1]
            assert error.error and "no_such_task" in error.text and "was_were" in error.text
            assert not c.searching and c.state is None

            c.find("was_were", paths)
            assert c.searching
            await c.idle()
            assert not c.searching and of_kind(posted, CircuitShown)
            s = c.state
            f = s.found
            assert f.task == "was_were" and s.complete and s.paths == paths
            assert len(s.curve) == POINTS and len(s.curve_features) == POINTS
            assert [site.name for site in f.sites] == ["resid_mid", "mlp_out"]
            assert f.nodes and f.figures.nodes == len(f.nodes) and f.errors
            assert any(e.target == "metric" for e in f.edges)
            progress = [m.text for m in of_kind(posted, CircuitStatus) if m.text.startswith("searching (attribution): ")]
            assert any("%" in t for t in progress), progress

            c.find("was_were", paths[::-1])  # another search fails: the circuit shown stays
            await c.idle()
            error = of_kind(posted, CircuitStatus)[-1]
            assert error.error and "order" in error.text and c.state is s

            # the threshold steps along the sweep; the figures are the new circuit's
            on_curve = [p.threshold for p in s.curve]
            shown = f.figures
            step = 1 if shown.threshold < max(on_curve) else -1
            point = c.step(step)
            await c.idle()
            assert point is not None and s.found.figures.threshold == point.threshold
            assert s.found.figures.nodes == point.nodes
            assert (s.found.figures.nodes < shown.nodes) == (step > 0)
            assert s.found.figures.faithfulness == pytest.approx(point.faithfulness, abs=1e-6)
            assert s.curve and len(s.curve) == POINTS  # kept, whatever the reply carried
            c.step(-step)
            await c.idle()
            assert s.found.figures.threshold == shown.threshold and s.found.figures.nodes == shown.nodes

            # the ends of the sweep: a note, no request
            while c.step(1) is not None:
                await c.idle()
            assert "smallest" in of_kind(posted, CircuitStatus)[-1].text
            smallest = s.found.figures
            assert smallest.nodes == min(p.nodes for p in s.curve)

            # error nodes out and back in, at the same threshold
            c.step(-1)
            await c.idle()
            with_errors = s.found.figures
            assert c.toggle_errors() is False
            await c.idle()
            assert not s.found.errors and s.found.figures.nodes == s.found.figures.features
            assert all(n.feature is not None for n in s.found.nodes)
            assert c.toggle_errors() is True
            await c.idle()
            assert s.found.errors and s.found.figures.nodes == with_errors.nodes

            # a node and its edge into the metric, measured exactly
            edge = next(e for e in s.found.edges if e.target == "metric")
            node = next(n for n in s.found.nodes if n.id == edge.source)
            c.verify(node, edge.target)
            await c.idle()
            v = s.verified_nodes[node.id]
            assert v.estimate == pytest.approx(node.effect, rel=1e-4) and v.exact == v.exact  # a number
            ve = s.verified_edges[(node.id, "metric")]
            assert ve.estimate == pytest.approx(edge.effect, rel=1e-4)
            note = of_kind(posted, CircuitShown)[-1].note
            assert f"exact {signed(v.exact)} vs ≈{signed(v.estimate)}" in note and note.count("exact") == 2
        finally:
            c.close()
            await link.close()

    asyncio.run(main())


def test_a_cancelled_search_shows_its_partial_sweep(sae_engine):
    async def main():
        posted: list = []
        link = await engine_link(sae_engine, posted)
        c = CircuitController(link, SaeSession(link), posted.append)
        c.points, c.max_nodes = 12, 400
        try:
            c.find("was_were", [sae_engine.up, sae_engine.down])
            for _ in range(600):  # until the sweep has finished a point or two
                if any("sweep" in m.text and "%" in m.text for m in of_kind(posted, CircuitStatus)):
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            assert c.cancel()
            await c.idle()
            assert c.state is not None, of_kind(posted, CircuitStatus)[-1].text
            s = c.state
            assert not s.complete and 0 < len(s.curve) < 12
            assert "partial" in of_kind(posted, CircuitShown)[-1].note
        finally:
            c.close()
            await link.close()

    asyncio.run(main())
