"""The engine's workspace: an LRU of open SAEs, indexes and trees under a memory budget."""

from __future__ import annotations

import os
import shutil

import pytest

from engine.errors import UserError
from engine.jobs import Job
from engine.protocol import FeaturePageParams, SaeOpenParams, TreeNodeParams, TreeOpenParams
from engine.workspace import Workspace, format_size, parse_size
from tests.conftest import REPO

WEIGHTS = REPO / "weights"

PROMPT = "def f(self, x):\n    return self."


def rss_bytes() -> int:
    """The process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Blob:
    def __init__(self, n: int):
        self.n = n


def test_lru_evicts_least_recent_reopens_and_drops_dependents():
    ws = Workspace(budget=100)
    built = []

    def opener(key, n, depends=()):
        def build():
            built.append(key)
            return Blob(n)
        return ws.open(key, build, lambda b: b.n, depends=depends)

    opener("a", 40)
    opener("b", 40)
    opener("t", 10, depends=["a"])  # a tree on "a"
    assert ws.used() == 90
    ws.get("a")  # now "b" is the least recent
    opener("c", 40)
    assert [k for k, _ in ws.open_items()] == ["t", "a", "c"] and ws.used() <= 100
    ws.get("b")  # evicted: rebuilt transparently, which evicts "t" (least recent) and then "a"
    assert built.count("b") == 2 and ws.used() <= 100
    assert "a" not in dict(ws.open_items()) and "t" not in dict(ws.open_items())
    with pytest.raises(KeyError):
        ws.get("never-opened")
    with pytest.raises(UserError, match="too small for the big one"):
        ws.open("big", lambda: Blob(101), lambda b: b.n, what="the big one")
    assert ws.used() <= 100 and not ws.known("big")


def test_sizes_parse_and_print():
    assert parse_size("4G") == 4 << 30 and parse_size("512m") == 512 << 20 and parse_size("1.5K") == 1536
    assert parse_size("100") == 100 and format_size(3 << 20) == "3.0 MiB"
    for bad in ("", "lots", "-1G", "0"):
        with pytest.raises(UserError):
            parse_size(bad)


@pytest.mark.slow
def test_fifty_saes_and_trees_stay_under_the_budget(default_model, tmp_path):
    """40 SAE views (each ~11 MiB, 27 MiB with its logit matrix) and 10 trees in one
    engine: the accounted bytes stay under the budget, resident memory grows by about
    the budget (not by 40 views), and an evicted tree and view come back on demand."""
    from engine.handlers import HANDLERS

    budget = 48 << 20
    ws = Workspace(budget)
    ws.set_model(default_model)
    for i in range(20):
        for name in ("mlp_out-topk", "resid_mid-topk"):
            shutil.copytree(WEIGHTS / "saes" / name, tmp_path / f"{name}-{i}")

    def call(method, params):
        result = HANDLERS[method](ws, params, Job())
        ws.remeasure()  # as the server does after every request
        return result

    first = call("tree.open", TreeOpenParams(tree="t0", upstream=str(tmp_path / "resid_mid-topk-0"),
                                             downstream=str(tmp_path / "mlp_out-topk-0"), prompt=PROMPT, top=2))
    before = rss_bytes()
    peak_used = 0
    for i in range(20):
        for name in ("mlp_out-topk", "resid_mid-topk"):
            path = str(tmp_path / f"{name}-{i}")
            call("sae.open", SaeOpenParams(path=path))
            if i % 4 == 0:  # a page grows the view by its logit matrix
                call("feature.page", FeaturePageParams(path=path, feature=i, top=1))
            peak_used = max(peak_used, ws.used())
        if i < 9:
            call("tree.open", TreeOpenParams(tree=f"t{i + 1}", upstream=str(tmp_path / f"resid_mid-topk-{i}"),
                                             downstream=str(tmp_path / f"mlp_out-topk-{i}"), prompt=PROMPT, top=1))
            peak_used = max(peak_used, ws.used())
    grown = rss_bytes() - before
    stats = ws.stats()
    # 40 views would hold about 450 MiB; allow the budget plus allocator slack
    assert grown < budget + (128 << 20), f"resident memory grew by {format_size(grown)}"
    assert peak_used <= budget and stats["known"] == 40 + 10 and stats["evictions"] > 30

    # the first tree and its SAEs were evicted long ago: they reopen, with the same numbers
    assert not any(k == ("tree", "t0") for k, _ in ws.open_items())
    again = call("tree.expand", TreeNodeParams(tree="t0", path=[0]))
    assert again.children and first.root.children[0].node.feature is not None
    page = call("feature.page", FeaturePageParams(path=str(tmp_path / "mlp_out-topk-0"), feature=3))
    assert page.feature == 3 and ws.used() <= budget


def test_a_budget_too_small_for_one_sae_is_an_error_reply_and_the_engine_serves_on():
    from tests.engine.engine_proc import EngineProcess

    engine = EngineProcess("--memory-budget", "1M")
    try:
        engine.request("m", "model.load", spec="default")
        assert engine.reply("m", timeout=120)[0]["status"] == "ok"
        engine.request("s", "sae.open", path=str(WEIGHTS / "saes" / "mlp_out-topk"))
        reply, _ = engine.reply("s", timeout=120)
        assert reply["status"] == "error" and "memory budget (1.0 MiB) is too small for the SAE" in reply["error"]
        engine.request("w", "workspace")
        stats = engine.reply("w")[0]["result"]
        assert stats["budget"] == 1 << 20 and stats["used"] == 0 and stats["open"] == 0
        engine.request("p", "ping")
        assert engine.reply("p")[0]["status"] == "ok"
    finally:
        engine.close()


def test_a_bad_budget_is_one_line_and_exit_2():
    from tests.conftest import run_saescope

    r = run_saescope("engine", "serve", "--stdio", "--memory-budget", "lots", timeout=60)
    assert r.returncode == 2 and "memory size" in r.stderr and "Traceback" not in r.stderr
