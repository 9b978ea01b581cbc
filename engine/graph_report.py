"""The graph methods' results (engine/protocol_graph.py) from open SAE views: one place
where every figure `saescope graph`/`compare` and the Graph pane show is computed.

A view's index must hold co-occurrence; an index saved before co-occurrence was
counted is rebuilt here first (with the job's progress), never read as an empty graph.
Graphs are kept on the view, keyed by their edge rule, so that expanding a tree in
the Graph pane does not rebuild one per click (they are small, a few MB at 1024
features, and not counted in the workspace's memory budget).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from engine.errors import UserError
from engine.graph import (COMMUNITY_FEATURES, build_graph, communities, degrees, histogram, pair_table, rule_text,
                          strengths)
from engine.graph_compare import (OPTIMAL_MAX, accuracy, anchored_scores, assignment, degree_jsd, matching_method,
                                  partner_of, pick_anchors, random_baseline, signature_scores, signatures, unit,
                                  weighted_adjacency)
from engine.jobs import Job, as_job
from engine.protocol_graph import (Distribution, FeatureMatch, GraphCommunity, GraphComparison, GraphNeighbour,
                                   GraphNode, GraphStats, RandomBaseline, StructuralAccuracy)

COMMUNITIES_LISTED = 12
HUBS_LISTED = 10
DESCRIBED = 3  # descriptions joined into a community's label


def ensure_cooccurrence(view, job: Job | None = None):
    """The view's index, rebuilt first when it has no co-occurrence (or none at all)."""
    index = view.index
    if index is None or not index.has_cooccurrence:
        view.ensure_index(rebuild=index is not None, job=job)
    return view.index


def graph_of(view, params, job: Job | None = None):
    """The view's graph for `params`' edge rule (built once per rule)."""
    index = ensure_cooccurrence(view, job)
    key = ("graph", params.weight, params.min_weight, params.min_count, id(index))
    if key not in view.graphs:
        if params.min_count < 1:
            raise UserError("min_count must be at least 1: an edge needs the two features to fire together")
        view.graphs.clear()  # one rule at a time: a new rule or a rebuilt index replaces the old graph
        view.graphs[key] = build_graph(pair_table(index), params.weight, params.min_weight, params.min_count)
    return view.graphs[key]


def _communities(view, g, seed: int):
    key = ("communities", id(g), seed)
    if key not in view.graphs:
        view.graphs[key] = communities(g, seed)
    return view.graphs[key]


def _neighbour(view, g, feature: int, edge: dict) -> GraphNeighbour:
    return GraphNeighbour(feature=feature, weight=edge["weight"], count=edge["count"], jaccard=edge["jaccard"],
                          cosine=edge["cosine"], degree=g.degree(feature), description=view.description(feature))


def graph_stats(view, params, job: Job | None = None) -> GraphStats:
    job = as_job(job)
    g = graph_of(view, params, job)
    job.check()
    found, modularity = _communities(view, g, params.seed)
    job.check()
    deg, strength = degrees(g), strengths(g)
    listed = []
    for cid, members in enumerate(c for c in found if len(c) > 1):
        if cid == COMMUNITIES_LISTED:
            break
        members = sorted(members, key=lambda n: (-g.degree(n, weight="weight"), n))[:COMMUNITY_FEATURES]
        descriptions = [view.description(f) for f in members]
        listed.append(GraphCommunity(id=cid, size=len(found[cid]), features=members, descriptions=descriptions,
                                     description="; ".join([d for d in descriptions if d][:DESCRIBED])))
    hubs = sorted(g, key=lambda n: (-g.degree(n), n))[:HUBS_LISTED]
    edges, counts = histogram(strength)
    components = list(nx.connected_components(g))
    index = view.index
    return GraphStats(
        path=str(view.dir), hook=view.hook, d_sae=view.d_sae, tokens=int(index.meta["tokens"]),
        weight=params.weight, min_weight=params.min_weight, min_count=params.min_count,
        rule=rule_text(params.weight, params.min_weight, params.min_count),
        definition=index.meta["cooccurrence"]["definition"],
        nodes=g.number_of_nodes(), dead=view.d_sae - g.number_of_nodes(), edges=g.number_of_edges(),
        isolated=int((deg == 0).sum()), mean_degree=float(deg.mean()) if len(deg) else 0.0,
        median_degree=float(np.median(deg)) if len(deg) else 0.0, max_degree=int(deg.max(initial=0)),
        mean_strength=float(strength.mean()) if len(strength) else 0.0,
        max_strength=float(strength.max(initial=0.0)),
        components=len(components), largest_component=max((len(c) for c in components), default=0),
        clustering=float(nx.average_clustering(g)) if len(g) else 0.0,
        clustering_weighted=float(nx.average_clustering(g, weight="weight")) if len(g) else 0.0,
        modularity=modularity, communities=listed, degree_counts=[int(c) for c in nx.degree_histogram(g)],
        strength=Distribution(edges=edges, counts=counts),
        hubs=[GraphNeighbour(feature=h, weight=float(g.degree(h, weight="weight")), count=g.nodes[h]["fires"],
                             jaccard=0.0, cosine=0.0, degree=g.degree(h), description=view.description(h))
              for h in hubs])


def graph_node(view, params, job: Job | None = None) -> GraphNode:
    g = graph_of(view, params, job)
    feature = view.check_feature(params.feature)
    if feature not in g:
        return GraphNode(path=str(view.dir), feature=feature, description=view.description(feature), in_graph=False,
                         fires=0, degree=0, strength=0.0, clustering=0.0, community=-1, neighbours=[])
    found, _ = _communities(view, g, params.seed)
    community = next((cid for cid, members in enumerate(c for c in found if len(c) > 1) if feature in members), -1)
    near = sorted(g[feature].items(), key=lambda kv: (-kv[1]["weight"], kv[0]))[:max(0, params.n)]
    return GraphNode(path=str(view.dir), feature=feature, description=view.description(feature), in_graph=True,
                     fires=g.nodes[feature]["fires"], degree=g.degree(feature),
                     strength=float(g.degree(feature, weight="weight")),
                     clustering=float(nx.clustering(g, feature)), community=community,
                     neighbours=[_neighbour(view, g, f, e) for f, e in near])


def _baseline(g, draws: int, seed: int) -> RandomBaseline:
    div, dist = random_baseline(g, draws, seed)
    return RandomBaseline(draws=draws, divergence_mean=float(div.mean()), divergence_std=float(div.std()),
                          distance_mean=float(dist.mean()), distance_std=float(dist.std()))


def check_comparable(view_a, view_b) -> str:
    """The note on what matching means; a UserError when the two cannot be compared."""
    if view_a.lm is not view_b.lm:
        raise UserError("the two SAEs were made for different models: their features cannot be matched")
    if view_a.hook != view_b.hook:
        raise UserError(f"the two SAEs read different hooks ({view_a.hook} and {view_b.hook}): "
                        "their features live in different spaces, so matching them means nothing")
    d_in_a, d_in_b = view_a.sae.W_dec.shape[1], view_b.sae.W_dec.shape[1]
    if d_in_a != d_in_b:
        raise UserError(f"the two SAEs' decoders have different widths ({d_in_a} and {d_in_b})")
    d_a, d_b = view_a.d_sae, view_b.d_sae
    if matching_method(d_a, d_b) == "nearest":
        return (f"each of the {d_a} features matched to its nearest direction in the other SAE, not one-to-one "
                f"(an optimal assignment is used up to {OPTIMAL_MAX} features)")
    if d_a == d_b:
        return f"one-to-one matching of all {d_a} features"
    small = min(d_a, d_b)
    return (f"different widths ({d_a} and {d_b}): a one-to-one matching of {small} features, "
            f"every feature of the smaller SAE matched and the rest of the larger left out; "
            f"the shared fraction is of the smaller SAE's {small} features")


def _weights(view) -> tuple[np.ndarray, np.ndarray]:
    """(unit-able decoder rows, encoder columns as rows), as float64 numpy."""
    return (view.sae.W_dec.detach().double().cpu().numpy(), view.sae.W_enc.detach().double().cpu().numpy().T)


def graph_compare(view_a, view_b, params, job: Job | None = None) -> GraphComparison:
    job = as_job(job)
    note = check_comparable(view_a, view_b)
    if not 0.0 <= params.anchors < 1.0:
        raise UserError("anchors must be a fraction in [0, 1)")
    if params.draws < 1:
        raise UserError("draws must be at least 1")
    feature = view_a.check_feature(params.feature) if params.feature is not None else None
    g_a = graph_of(view_a, params, job)
    g_b = graph_of(view_b, params, job)
    d_a, d_b = view_a.d_sae, view_b.d_sae
    steps = 6
    job.progress(1 / steps, "degree distributions against random graphs")
    divergence, distance = degree_jsd(g_a, g_b)
    random_a, random_b = _baseline(g_a, params.draws, params.seed), _baseline(g_b, params.draws, params.seed)
    job.progress(2 / steps, "matching decoder directions")
    (dec_a, enc_a), (dec_b, enc_b) = _weights(view_a), _weights(view_b)
    rows, cols, cos = assignment(dec_a, dec_b)
    job.check()
    job.progress(3 / steps, "matching encoder directions")
    e_rows, e_cols, e_cos = assignment(enc_a, enc_b)
    partner, e_partner = partner_of(rows, cols, d_a), partner_of(e_rows, e_cols, d_a)
    job.progress(4 / steps, "structural matching")
    true_rows = rows[cos >= params.threshold]
    sig_a, sig_b = signatures(g_a, d_a), signatures(g_b, d_b)
    adj_a = weighted_adjacency(pair_table(view_a.index), params.weight)
    adj_b = weighted_adjacency(pair_table(view_b.index), params.weight)
    top1, top10 = accuracy(lambda r: signature_scores(sig_a, sig_b, r), true_rows, partner[true_rows])
    structural = [StructuralAccuracy(method="signature", top1=top1, top10=top10, evaluated=len(true_rows), anchors=0)]
    job.check()
    anchors = pick_anchors(true_rows, params.anchors, params.seed)
    rest = np.setdiff1d(true_rows, anchors)
    if len(anchors):
        top1, top10 = accuracy(lambda r: anchored_scores(adj_a, adj_b, anchors, partner[anchors], r), rest,
                               partner[rest])
        structural.append(StructuralAccuracy(method="anchored", top1=top1, top10=top10, evaluated=len(rest),
                                             anchors=len(anchors)))
    job.progress(5 / steps, "the feature's matches")
    result = GraphComparison(
        path=str(view_a.dir), other=str(view_b.dir), hook=view_a.hook, d_sae=d_a, other_d_sae=d_b,
        matching_note=note, nodes=g_a.number_of_nodes(), other_nodes=g_b.number_of_nodes(),
        edges=g_a.number_of_edges(), other_edges=g_b.number_of_edges(), degree_divergence=divergence,
        degree_distance=distance, random=random_a, other_random=random_b, threshold=params.threshold,
        shared_fraction=float((cos >= params.threshold).mean()), mean_cosine=float(cos.mean()),
        encoder_shared_fraction=float((e_cos >= params.threshold).mean()), encoder_mean_cosine=float(e_cos.mean()),
        agreement=float((e_partner[rows] == cols).mean()), structural=structural,
        degree_counts=[int(c) for c in nx.degree_histogram(g_a)],
        other_degree_counts=[int(c) for c in nx.degree_histogram(g_b)])
    if feature is not None:
        _feature_matches(result, view_a, view_b, feature, params, partner, cos, rows, true_rows,
                         (sig_a, sig_b, adj_a, adj_b), dec_a, dec_b)
    job.progress(1.0, "compared")
    return result


def _feature_matches(result: GraphComparison, view_a, view_b, feature: int, params, partner, cos, rows, true_rows,
                     structure, dec_a, dec_b) -> None:
    """Fill `result`'s fields about one feature of A: its partner and best matches three ways."""
    sig_a, sig_b, adj_a, adj_b = structure
    n = max(1, params.n)

    def matches(scores: np.ndarray) -> list[FeatureMatch]:
        best = np.argsort(-scores, kind="stable")[:n]
        return [FeatureMatch(feature=int(f), score=float(scores[f]), description=view_b.description(int(f)))
                for f in best]

    result.feature, result.description = feature, view_a.description(feature)
    if partner[feature] >= 0:
        p = int(partner[feature])
        result.partner = FeatureMatch(feature=p, score=float(cos[rows == feature][0]),
                                      description=view_b.description(p))
    result.by_decoder = matches((unit(dec_a[[feature]]) @ unit(dec_b).T)[0])
    anchors = pick_anchors(true_rows[true_rows != feature], params.anchors, params.seed)
    if len(anchors):
        result.by_structure = matches(anchored_scores(adj_a, adj_b, anchors, partner[anchors], np.array([feature]))[0])
    result.by_signature = matches(signature_scores(sig_a, sig_b, np.array([feature]))[0])
