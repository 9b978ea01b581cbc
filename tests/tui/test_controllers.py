"""The Inspector's and the Ablation pane's controllers without a screen: plain asyncio
against the real engine (the shared `sae_engine`), the messages they post collected
in a list. What the panes draw comes from here, so each behaviour the issue asked
for is checked at this level too: restore with the same key, ablations kept across
positions, the prediction before and after, errors whole, features out of range
refused, a failed SAE leaving the shown one named."""

from __future__ import annotations

import asyncio

from tests.tui.sae_setup import PROMPT, engine_link, of_kind, sae_engine  # noqa: F401 (a fixture)
from tui.controllers.ablation import AblationController, ChildrenArrived, Status, TreeFailed, TreeShown
from tui.controllers.inspector import InspectorController, InspectorStatus, PageArrived, PageFailed
from tui.sae_session import SaeSession


def test_ablation_controller(sae_engine):
    async def main():
        posted: list = []
        link = await engine_link(sae_engine, posted)
        c = AblationController(link, SaeSession(link), posted.append)
        paths = [sae_engine.up, sae_engine.down]
        try:
            assert c.open("  ", paths) is None and of_kind(posted, Status)[-1].error

            # a newer open replaces an older one: only the newer tree is shown
            c.open(PROMPT + " x", paths)
            c.open(PROMPT, paths)
            await c.idle()
            s = c.state
            assert s.prompt == PROMPT and of_kind(posted, TreeShown)
            assert s.opened.position == len(s.opened.tokens) - 1

            # expand a downstream feature: its upstream drivers arrive as a message
            i, node = next((i, n) for i, n in enumerate(s.up.children) if n.node.kind == "feature")
            c.expand((i,), node)
            await c.idle()
            arrived = of_kind(posted, ChildrenArrived)[-1]
            assert arrived.path == (i,) and not arrived.down and node.children
            up_feature = next(n for n in node.children if n.node.kind == "feature")
            assert up_feature.node.site_index == 0

            # ablate, then restore with the same call; the prediction before/after comes with it
            c.toggle_ablation(up_feature)
            await c.idle()
            f = up_feature.node.feature
            assert s.ablated == (0, (f,)) and c.is_ablated(up_feature) and s.down is not None
            change = c.prediction
            assert change is not None and change.rows
            assert change.top_before == s.opened.predicted
            c.toggle_ablation(up_feature)
            assert s.ablated is None and c.prediction is None and not c.is_ablated(up_feature)
            assert of_kind(posted, TreeShown)[-1].note == "Ablations restored."

            # another position keeps the ablations and ablates them again there
            c.toggle_ablation(up_feature)
            await c.idle()
            c.recompute(position=s.opened.position - 1)
            await c.idle()
            s2 = c.state
            assert s2 is not s and s2.opened.position == s.opened.position - 1
            assert s2.ablated == (0, (f,)) and s2.down is not None and c.prediction is not None
            assert s2.down.node.features == [f]
            # the same SAEs open again (another method): the open node is reopened, exact
            c.switch_method()
            await c.idle()
            s3 = c.state
            assert s3.method == "exact" and all(n.method == "exact" for n in s3.up.children)
            assert s3.ablated == (0, (f,))

            # the down tree's root restores them all
            assert c.switch_direction() and c.direction == "down"
            c.toggle_ablation(s3.down)
            assert s3.ablated is None and c.direction == "up"

            # an error comes whole, with the SAEs of the tree shown
            c.open(PROMPT, paths[::-1])
            await c.idle()
            failed = of_kind(posted, TreeFailed)[-1]
            assert failed.paths == paths and "model order" in failed.error
            assert failed.error.endswith(s3.opened.sites[0].hook)
            assert c.state is s3
        finally:
            c.close()
            await link.close()

    asyncio.run(main())


def test_inspector_controller(sae_engine):
    async def main():
        posted: list = []
        link = await engine_link(sae_engine, posted)
        saes = SaeSession(link)
        c = InspectorController(link, saes, posted.append)
        path = sae_engine.down
        try:
            assert c.want(path, 3) is None  # not cached: it arrives as a message
            await c.idle()
            arrived = of_kind(posted, PageArrived)[-1]
            assert (arrived.path, arrived.feature, arrived.page.feature) == (path, 3, 3)
            c.shown_page(path, arrived.page)  # the pane drew it: the next pages are prefetched
            for _ in range(200):
                if c.pages.cached(path, 4) is not None:
                    break
                await asyncio.sleep(0.05)
            page = c.want(path, 4)
            assert page is not None and page.feature == 4  # at once, from the cache
            assert c.current == (path, 4) and c.shown == (path, 4)

            d_sae = saes.info(path).d_sae
            assert c.want(path, d_sae) is None
            status = of_kind(posted, InspectorStatus)[-1]
            assert status.error and f"feature {d_sae} is out of range" in status.text and f"0..{d_sae - 1}" in status.text
            assert c.current == (path, 4)  # nothing moved

            c.want("/nowhere/sae", 1)
            await c.idle()
            failed = of_kind(posted, PageFailed)[-1]
            assert failed.shown == path and "nowhere" in failed.error and c.current == (path, 4)
            assert c.back() == (path, 3)

            hits = await c.search(path, "densest", "")
            assert hits and all(h.description for h in hits)
        finally:
            c.close()
            await link.close()

    asyncio.run(main())
