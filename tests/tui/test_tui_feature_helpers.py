"""Pure helpers of the Inspector and Ablation panes, without an engine: the page
cache, prefetch order, shaded examples, tree labels and finding tree nodes again."""

from __future__ import annotations

import asyncio

import msgspec

from engine.protocol import NodeLabel, TreeNode

from engine.feature_text import context_token, effect_bar, node_label, shade
from tui.page_cache import PageCache
from tui.tree_state import find_chain, node_key, open_chains
from tui.controllers.inspector import prefetch_order


def test_page_cache_shares_fetches_and_prefetches_in_order():
    async def main():
        started: list[tuple[str, int]] = []
        release = asyncio.Event()

        async def fetch(path: str, feature: int, background: bool) -> dict:
            started.append((path, feature))
            assert background == (feature != 1)  # only the first is asked for in the foreground
            await release.wait()
            return {"feature": feature}

        cache = PageCache(fetch, capacity=3)
        a, b = asyncio.ensure_future(cache.get("s", 1)), asyncio.ensure_future(cache.get("s", 1))
        await asyncio.sleep(0)
        release.set()
        assert (await a) is (await b) and started == [("s", 1)]  # one fetch for two askers
        assert cache.cached("s", 1) == {"feature": 1} and cache.cached("s", 2) is None

        cache.prefetch("s", [2, 1, 3, 2])  # 1 is cached, 2 is asked once
        while len(started) < 2:
            await asyncio.sleep(0)
        cache.prefetch("s", [4, 5])  # replaces the queue: 3 never starts
        while cache.prefetching:
            await asyncio.sleep(0)
        assert started == [("s", 1), ("s", 2), ("s", 4), ("s", 5)] and cache.fetched == started
        assert cache.cached("s", 1) is None  # capacity 3: the oldest went

    asyncio.run(main())


def test_prefetch_order():
    assert prefetch_order(10, 100, [50, 11]) == [11, 9, 12, 8, 13, 7, 50, 11]
    assert prefetch_order(0, 3, [2]) == [1, 2, 2]  # within 0..d_sae-1, never the feature itself


def test_shade_keeps_the_peak_in_view():
    tokens = [f" t{i}" for i in range(30)]
    acts = [0.0] * 30
    acts[25] = 2.0
    text = shade(tokens, acts, 2.0, mark=25, width=30)
    assert text.plain.startswith("…") and " t25" in text.plain and text.plain.endswith(" t29")
    assert text.cell_len <= 31
    peak = next(span for span in text.spans if "underline" in str(span.style))
    assert text.plain[peak.start:peak.end] == " t25" and "on rgb(240,100,40)" in str(peak.style)
    assert shade([" a"], [0.0], 1.0).spans == []  # no activation, no shading


def test_context_token():
    assert context_token("\n        ") == "↵  " and context_token("    ") == "  "
    assert context_token(" self") == " self" and context_token("\t") == "→" and context_token("") == "∅"


def test_labels_show_sign_method_and_exact_value():
    node = TreeNode(NodeLabel("feature", site="mlp_out", site_index=1, feature=7), effect=-0.5,
                    method="attribution", description="' self'")
    text = node_label(node, biggest=1.0, ablated=True, exact=-0.25).plain
    assert text.startswith("✗ mlp_out #7") and "−0.500 ≈" in text and "=−0.250" in text and text.endswith("' self'")
    exact = node_label(msgspec.structs.replace(node, method="exact", effect=0.5), biggest=0.5).plain
    assert "+0.500 =" in exact and "██████" in exact
    assert effect_bar(0.25, 1.0, 4) == "█   " and effect_bar(1.0, 0.0, 3) == "   "


def test_open_nodes_are_found_again_by_what_they_are():
    def feature(f, children=None):
        return TreeNode(NodeLabel("feature", site_index=1, feature=f), effect=0.0, method="exact", children=children)

    def metric(children):
        return TreeNode(NodeLabel("metric"), effect=0.0, method="value", children=children)

    old = metric([feature(1), feature(2, [feature(5, [])]), feature(3)])
    chains = open_chains(old)
    assert chains == [(node_key(feature(2)),), (node_key(feature(2)), node_key(feature(5)))]
    new = metric([feature(2, [feature(9), feature(5)]), feature(1)])
    path, node = find_chain(new, chains[1])
    assert path == [0, 1] and node.node.feature == 5
    assert find_chain(metric([feature(1)]), chains[0]) is None


def test_page_cache_cancels_a_fetch_nobody_waits_for():
    async def main():
        cancelled = []

        async def fetch(path: str, feature: int, background: bool) -> dict:
            try:
                await asyncio.sleep(10)
            except asyncio.CancelledError:
                cancelled.append(feature)
                raise
            return {}

        cache = PageCache(fetch)
        lone, a, b = (asyncio.ensure_future(cache.get("s", f)) for f in (1, 2, 2))
        await asyncio.sleep(0.01)
        lone.cancel()
        a.cancel()  # b still waits for page 2
        await asyncio.sleep(0.01)
        assert cancelled == [1] and not b.done()
        b.cancel()
        await asyncio.sleep(0.01)
        assert cancelled == [1, 2]

    asyncio.run(main())
