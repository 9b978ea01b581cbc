"""Co-activation graphs against independent computations: co-occurrence counts against
brute force over the indexed tokens, graph statistics against networkx run on a graph
built here by hand, JSD and matching against scipy/brute force, and bad input."""

from __future__ import annotations

import itertools
import json

import networkx as nx
import numpy as np
import pytest
import torch

import engine.cooccur as cooccur
from engine.errors import UserError
from engine.graph import build_graph, pair_table
from engine.graph_compare import assignment, jsd, rank_of_partner
from engine.graph_report import ensure_cooccurrence, graph_compare, graph_node, graph_stats
from engine.index import index_paths, load_index
from engine.inspect import SaeView
from engine.protocol import GraphCompareParams, GraphNodeParams, GraphParams
from tests.engine.test_inspect import make_sae

N_WINDOWS = 24


@pytest.fixture(scope="module")
def view(default_model, tmp_path_factory):
    folder = make_sae(tmp_path_factory.mktemp("sae") / "sae", d_sae=64)
    v = SaeView(default_model, folder, index_tokens=N_WINDOWS * 128)
    v.ensure_index()
    return v


@pytest.fixture(scope="module")
def acts(view):
    """[tokens, S] every activation on every indexed token (BOS left out)."""
    with torch.no_grad():
        a = view._acts(view.windows)[:, 1:]
    return a.reshape(-1, a.shape[-1]).double().numpy()


def brute_pairs(acts: np.ndarray):
    fired = (acts > 0).astype(np.float64)
    return fired.T @ fired, acts.T @ acts  # counts (C_ii on the diagonal), products


def test_cooccurrence_equals_brute_force(view, acts):
    counts, products = brute_pairs(acts)
    idx = view.index
    assert idx.has_cooccurrence and "definition" in idx.meta["cooccurrence"]
    dense_c, dense_p = np.zeros_like(counts), np.zeros_like(products)
    offsets = idx.cooc_offsets.numpy()
    for i in range(view.d_sae):
        cols = idx.cooc_columns[offsets[i]:offsets[i + 1]].numpy()
        assert (cols > i).all() and (np.diff(cols) > 0).all()  # upper triangle, sorted
        dense_c[i, cols] = idx.cooc_counts[offsets[i]:offsets[i + 1]].numpy()
        dense_p[i, cols] = idx.cooc_products[offsets[i]:offsets[i + 1]].numpy()
    upper = np.triu(np.ones_like(counts, dtype=bool), 1)
    assert counts[upper].sum() > 100  # the test SAE co-fires: the check means something
    np.testing.assert_array_equal(dense_c[upper], counts[upper])
    np.testing.assert_allclose(dense_p[upper], products[upper], rtol=1e-4, atol=1e-6)
    np.testing.assert_array_equal(idx.fire_count.numpy(), np.diag(counts))
    np.testing.assert_allclose(idx.act_sq_sum.numpy(), np.diag(products), rtol=1e-6)


def test_the_sparse_table_equals_the_dense_one(monkeypatch):
    """Above `DENSE_MAX` features the table is sparse and merged every few batches: same counts."""
    gen = torch.Generator().manual_seed(1)
    batches = []
    for _ in range(5):
        a = torch.rand(200, 40, generator=gen)
        a[a < 0.85] = 0  # about 6 of 40 fire per token
        batches.append(a)

    def count(dense_max: int):
        monkeypatch.setattr(cooccur, "DENSE_MAX", dense_max)
        monkeypatch.setattr(cooccur, "MERGE_EVERY", 2)
        counter = cooccur.CooccurrenceCounter(40, "cpu")
        for a in batches:
            rows, feats = (a > 0).nonzero(as_tuple=True)
            counter.add(rows, feats, a[rows, feats], len(a))
        assert counter.dense == (dense_max >= 40)
        return counter.finish()

    dense, sparse = count(4096), count(8)
    for name in ("cooc_offsets", "cooc_columns", "cooc_counts"):
        assert torch.equal(dense[name], sparse[name]), name
    torch.testing.assert_close(dense["cooc_products"], sparse["cooc_products"])
    everything = torch.cat(batches).double()
    fired = (everything > 0).double()
    assert int(dense["cooc_counts"].sum()) == int(torch.triu(fired.T @ fired, 1).sum())


def by_hand_graph(acts: np.ndarray, min_weight: float, min_count: int) -> nx.Graph:
    """The module's rule applied to brute-force counts, written out pair by pair."""
    counts, _ = brute_pairs(acts)
    g = nx.Graph()
    fires = np.diag(counts)
    g.add_nodes_from(int(f) for f in np.flatnonzero(fires > 0))
    for i, j in itertools.combinations(range(len(fires)), 2):
        c = counts[i, j]
        if c >= min_count and c / (fires[i] + fires[j] - c) >= min_weight:
            g.add_edge(i, j, weight=c / (fires[i] + fires[j] - c))
    return g


def test_graph_statistics_equal_networkx_on_a_graph_built_by_hand(view, acts):
    params = GraphParams(path=str(view.dir), min_weight=0.05, min_count=3)
    expected = by_hand_graph(acts, 0.05, 3)
    s = graph_stats(view, params)
    assert expected.number_of_edges() > 20 and s.edges == expected.number_of_edges()
    assert s.nodes == expected.number_of_nodes() and s.dead == view.d_sae - s.nodes
    deg = np.array([d for _, d in expected.degree()])
    assert s.degree_counts == nx.degree_histogram(expected)
    assert s.isolated == int((deg == 0).sum()) and s.max_degree == deg.max()
    assert s.mean_degree == pytest.approx(deg.mean()) and s.median_degree == pytest.approx(np.median(deg))
    strength = np.array([d for _, d in expected.degree(weight="weight")])
    assert s.mean_strength == pytest.approx(strength.mean()) and s.max_strength == pytest.approx(strength.max())
    assert sum(s.strength.counts) == s.nodes
    assert s.components == nx.number_connected_components(expected)
    assert s.largest_component == len(max(nx.connected_components(expected), key=len))
    assert s.clustering == pytest.approx(nx.average_clustering(expected))
    assert s.clustering_weighted == pytest.approx(nx.average_clustering(expected, weight="weight"))
    louvain = nx.community.louvain_communities(expected, weight="weight", seed=0)
    assert s.modularity == pytest.approx(nx.community.modularity(expected, louvain, weight="weight"))
    assert sorted(c.size for c in s.communities) == sorted(len(c) for c in louvain if len(c) > 1)[-len(s.communities):]
    node = graph_node(view, GraphNodeParams(path=str(view.dir), min_weight=0.05, min_count=3,
                                            feature=s.hubs[0].feature, n=100))
    hub = s.hubs[0].feature
    assert node.degree == expected.degree(hub) == len(node.neighbours)
    assert {nb.feature for nb in node.neighbours} == set(expected[hub])
    assert [nb.weight for nb in node.neighbours] == sorted((nb.weight for nb in node.neighbours), reverse=True)
    for nb in node.neighbours:
        assert nb.weight == pytest.approx(expected[hub][nb.feature]["weight"]) and nb.jaccard == nb.weight
    counts, products = brute_pairs(acts)
    f = node.neighbours[0].feature
    assert node.neighbours[0].count == counts[hub, f]
    assert node.neighbours[0].cosine == pytest.approx(products[hub, f] / np.sqrt(products[hub, hub] * products[f, f]))
    dead = graph_node(view, GraphNodeParams(path=str(view.dir), feature=0))  # b_enc -50: never fires
    assert not dead.in_graph and dead.neighbours == []


def test_jsd_and_matching_against_independent_computations():
    p, q = np.array([0.5, 0.3, 0.2]), np.array([0.1, 0.1, 0.3, 0.5])
    pp, qq = np.append(p, 0), q
    m = (pp + qq) / 2
    kl = lambda a, b: float(np.sum(np.where(a > 0, a * np.log2(np.where(a > 0, a, 1) / b), 0.0)))  # noqa: E731
    divergence, distance = jsd(p, q)
    assert divergence == pytest.approx((kl(pp, m) + kl(qq, m)) / 2) and distance == pytest.approx(divergence ** 0.5)
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    rows, cols, cos = assignment(a, b)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    full = unit(a) @ unit(b).T
    best = max(itertools.permutations(range(6)), key=lambda perm: sum(full[i, perm[i]] for i in range(6)))
    assert list(cols[np.argsort(rows)]) == list(best)
    np.testing.assert_allclose(cos, full[rows, cols])
    import engine.graph_compare as gc

    gc_max, gc.OPTIMAL_MAX = gc.OPTIMAL_MAX, 4  # wider than this: each row's nearest, not one-to-one
    try:
        rows, cols, cos = assignment(a, b)
    finally:
        gc.OPTIMAL_MAX = gc_max
    assert list(rows) == list(range(6)) and list(cols) == list(full.argmax(1))
    np.testing.assert_allclose(cos, full.max(1))
    # a tie counts against the method: all-zero scores never find the partner
    assert list(rank_of_partner(np.zeros((2, 5)), np.array([1, 3]))) == [4, 4]
    assert list(rank_of_partner(np.array([[0.1, 0.9, 0.5]]), np.array([1]))) == [0]


def test_compare_with_itself_and_with_another_seed(view, default_model, tmp_path):
    same = graph_compare(view, view, GraphCompareParams(path="a", other="a", feature=10, draws=2,
                                                        min_count=3, threshold=0.9))
    assert same.degree_divergence == pytest.approx(0, abs=1e-12) and same.shared_fraction == 1.0
    assert same.mean_cosine == pytest.approx(1.0) and same.agreement == 1.0
    assert same.partner.feature == 10 and same.by_decoder[0].feature == 10
    assert same.random.divergence_mean > 0.05 and len(same.structural) == 2
    other = SaeView(default_model, make_sae(tmp_path / "wide", d_sae=80, seed=3), index_tokens=N_WINDOWS * 128)
    c = graph_compare(view, other, GraphCompareParams(path="a", other="b", draws=2, min_count=3))
    assert "different widths (64 and 80)" in c.matching_note and 0 <= c.shared_fraction <= 1
    assert other.index is not None and other.index.has_cooccurrence  # indexed on demand
    resid = SaeView(default_model, make_sae(tmp_path / "resid", hook="blocks.0.hook_resid_pre"),
                    index_tokens=N_WINDOWS * 128)
    with pytest.raises(UserError, match="different hooks"):
        graph_compare(view, resid, GraphCompareParams(path="a", other="c"))
    with pytest.raises(UserError, match="out of range"):
        graph_compare(view, other, GraphCompareParams(path="a", other="b", feature=64))
    with pytest.raises(UserError, match="anchors"):
        graph_compare(view, other, GraphCompareParams(path="a", other="b", anchors=1.5))


def test_an_index_without_cooccurrence_is_rebuilt_with_progress(default_model, tmp_path):
    from engine.jobs import Job

    folder = make_sae(tmp_path / "old", d_sae=32)
    v = SaeView(default_model, folder, index_tokens=8 * 128)
    v.ensure_index()
    data, meta_path = index_paths(folder, v.corpus.name)
    from safetensors.torch import load_file, save_file

    tensors = {k: t for k, t in load_file(str(data)).items() if not k.startswith("cooc_") and k != "act_sq_sum"}
    save_file(tensors, str(data))  # as an index saved before co-occurrence was counted
    meta = json.loads(meta_path.read_text())
    del meta["cooccurrence"]
    meta_path.write_text(json.dumps(meta))
    old = SaeView(default_model, folder)
    assert old.index is not None and not old.index.has_cooccurrence  # still serves pages
    seen = []
    job = Job("t", "graph.stats", lambda kind, data: seen.append(data))
    ensure_cooccurrence(old, job)
    assert old.index.has_cooccurrence and any(d.get("fraction") == 1.0 for d in seen)
    assert load_index(folder, v.corpus.name, v.identity).has_cooccurrence  # saved


def test_the_shipped_seeds_have_comparable_graphs():
    """The shipped indexes carry co-occurrence; the two seeds' graphs are built from them."""
    from engine.graph_compare import degree_jsd
    from engine.index import FeatureIndex  # noqa: F401 (the loaded type)
    from engine.paths import WEIGHTS_DIR

    graphs = []
    for name in ("mlp_out-topk", "mlp_out-topk-s1"):
        folder = WEIGHTS_DIR / "saes" / name
        meta = json.loads((folder / "index" / "shard.json").read_text())
        index = load_index(folder, "shard", {k: meta[k] for k in ("sae", "corpus")})
        assert index is not None and index.has_cooccurrence, name
        graphs.append(build_graph(pair_table(index)))
    divergence, _ = degree_jsd(*graphs)
    assert divergence < 0.2  # alike; against G(n, m) it is above 0.5 (closing note of issue 15)


def _shipped_weights(name: str):
    from safetensors.numpy import load_file

    from engine.paths import WEIGHTS_DIR

    return load_file(str(WEIGHTS_DIR / "saes" / name / "sae_weights.safetensors"))


def test_graph_and_compare_commands():
    """`saescope graph` / `compare` on the shipped seeds, JSON checked against networkx
    and scipy run here on the saved files; bad input exits 2 with one line."""
    import msgspec
    from scipy.optimize import linear_sum_assignment

    from engine.protocol import GraphComparison, GraphNode, GraphStats
    from tests.conftest import run_saescope

    r = run_saescope("graph", "mlp_out-topk", "--feature", "5", "--n", "4", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    stats_line, node_line = r.stdout.strip().splitlines()
    stats, node = msgspec.json.decode(stats_line, type=GraphStats), msgspec.json.decode(node_line, type=GraphNode)
    from engine.paths import WEIGHTS_DIR

    folder = WEIGHTS_DIR / "saes" / "mlp_out-topk"
    meta = json.loads((folder / "index" / "shard.json").read_text())
    g = build_graph(pair_table(load_index(folder, "shard", {k: meta[k] for k in ("sae", "corpus")})))
    assert (stats.nodes, stats.edges) == (g.number_of_nodes(), g.number_of_edges())
    assert stats.degree_counts == nx.degree_histogram(g) and stats.components == nx.number_connected_components(g)
    assert node.feature == 5 and len(node.neighbours) == 4 and node.degree == g.degree(5)
    assert node.neighbours[0].feature == max(g[5], key=lambda f: g[5][f]["weight"])

    r = run_saescope("compare", "mlp_out-topk", "mlp_out-topk-s1", "--feature", "5", "--n", "3", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    c = msgspec.json.decode(r.stdout.strip().splitlines()[-1], type=GraphComparison)
    a, b = _shipped_weights("mlp_out-topk")["W_dec"], _shipped_weights("mlp_out-topk-s1")["W_dec"]
    cos = (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (b / np.linalg.norm(b, axis=1, keepdims=True)).T
    rows, cols = linear_sum_assignment(-cos.astype(np.float64))
    assert c.shared_fraction == pytest.approx(float((cos[rows, cols] >= 0.7).mean()), abs=1.5 / 1024)
    assert c.mean_cosine == pytest.approx(float(cos[rows, cols].mean()), abs=1e-4)
    assert c.partner.feature == cols[5] and c.by_decoder[0].feature == int(cos[5].argmax())
    assert c.degree_divergence < c.random.divergence_mean and c.degree_distance == pytest.approx(c.degree_divergence ** 0.5)
    assert [s.method for s in c.structural] == ["signature", "anchored"]

    r = run_saescope("compare", "mlp_out-topk", "resid_mid-topk")
    assert r.returncode == 2 and "different hooks" in r.stderr
    r = run_saescope("graph", "mlp_out-topk", "--weight", "bogus")
    assert r.returncode == 2 and "bad option" in r.stderr


def test_graph_methods_over_the_protocol():
    from engine.protocol import decode_result
    from tests.engine.engine_proc import EngineProcess

    engine = EngineProcess()
    try:
        engine.request("gl", "model.load")
        assert engine.reply("gl")[0]["status"] == "ok"
        engine.request("gs", "graph.stats", path="mlp_out-topk", min_weight=0.1)
        reply, _ = engine.reply("gs")
        s = decode_result("graph.stats", reply["result"])
        assert s.min_weight == 0.1 and s.edges > 0 and s.communities
        engine.request("gn", "graph.node", path="mlp_out-topk", min_weight=0.1, feature=s.hubs[0].feature, n=3)
        node = decode_result("graph.node", engine.reply("gn")[0]["result"])
        assert node.degree == s.hubs[0].degree and len(node.neighbours) == 3
        engine.request("gc", "graph.compare", path="mlp_out-topk", other="mlp_out-topk-s1", feature=7, draws=2)
        reply, events = engine.reply("gc")
        c = decode_result("graph.compare", reply["result"])
        assert c.feature == 7 and c.partner is not None and c.random.draws == 2 and events
        engine.request("gx", "graph.node", path="mlp_out-topk", feature=-1)
        assert "out of range" in engine.reply("gx")[0]["error"]
        engine.request("gy", "graph.compare", path="mlp_out-topk", other="no-such-sae")
        assert "no SAE folder or shipped SAE named" in engine.reply("gy")[0]["error"]
        engine.request("gz", "ping")
        assert engine.reply("gz")[0]["status"] == "ok"  # the engine goes on
    finally:
        engine.close()
