"""A constructed `circuit.find` result (no engine) for the Circuit pane's screenless
tests and its layout snapshot: three sites, feature and error nodes, edges to the
metric and between sites, a node without edges, and swept curves.

The numbers are made up but shaped like the engine's: nodes by |effect|, curves by
size, the circuit shown a point of the curve with error nodes. `mask_found` is a
mask circuit on the same sites (lambda grid, per-position nodes, plain m(C)/m(M)).
"""

from __future__ import annotations

from engine.protocol import (CircuitCrossings, CircuitEdge, CircuitFigures, CircuitFound, CircuitNode, CurvePoint,
                             SiteInfo)

SITES = [SiteInfo("resid_pre", "blocks.0.hook_resid_pre", "/w/saes/resid_pre-topk"),
         SiteInfo("attn_out", "blocks.0.hook_attn_out", "/w/saes/attn_out-topk"),
         SiteInfo("mlp_out", "blocks.0.hook_mlp_out", "/w/saes/mlp_out-topk")]


def node(site: int, feature: int | None, effect: float, description: str = "") -> CircuitNode:
    name = SITES[site].name
    return CircuitNode(f"{name}/{'error' if feature is None else feature}", name, site, effect, feature,
                       description=description)


NODES = [
    node(2, 812, 0.912, "' was' after she/he/it"),
    node(1, 1453, 0.604, "copies the subject's number"),
    node(0, 77, 0.415, "'she', 'he' tokens"),
    node(2, None, 0.301),
    node(1, 230, -0.188, "plural pronouns: they, we"),
    node(0, 1999, 0.120, "'I' at a clause start"),
    node(2, 64, 0.052, "end of a clause"),  # no edges: listed under its site
]
EDGES = [
    CircuitEdge("mlp_out/812", "metric", 0.610),
    CircuitEdge("mlp_out/error", "metric", 0.301),
    CircuitEdge("attn_out/1453", "metric", 0.280),
    CircuitEdge("attn_out/230", "metric", -0.150),
    CircuitEdge("attn_out/1453", "mlp_out/812", 0.322),
    CircuitEdge("resid_pre/77", "mlp_out/812", 0.118),
    CircuitEdge("attn_out/230", "mlp_out/812", -0.040),
    CircuitEdge("resid_pre/77", "attn_out/1453", 0.265),
    CircuitEdge("resid_pre/1999", "attn_out/230", -0.091),
]
SIZES = [1, 2, 4, 7, 12, 21, 36, 62, 107, 185, 320, 553, 955, 1650]
FAITH = [0.08, 0.21, 0.46, 0.83, 0.88, 0.92, 0.95, 0.97, 0.98, 0.99, 1.0, 1.0, 1.0, 1.0]
COMPLETE = [0.91, 0.80, 0.52, 0.31, 0.22, 0.15, 0.10, 0.07, 0.05, 0.03, 0.02, 0.01, 0.0, 0.0]
CURVE = [CurvePoint(round(1.0 / n, 6), n, max(0, n - 1), f, c) for n, f, c in zip(SIZES, FAITH, COMPLETE)]
CURVE_FEATURES = [CurvePoint(round(0.8 / n, 6), n, n, f * 0.7, min(1.0, c * 1.2))
                  for n, f, c in zip(SIZES, FAITH, COMPLETE)]


def found(complete: bool = True) -> CircuitFound:
    """The circuit at the curve's 4th point (7 nodes), with error nodes."""
    point = CURVE[3]
    figures = CircuitFigures(point.threshold, 7, 6, 2.18, 0.02, 1.81, 1.55, point.faithfulness, point.completeness)
    return CircuitFound(
        circuit="fixture", task="was_were", method="attribution", metric="logit diff: right answer − wrong",
        pairs=40, held_out=20, tokens=["She", " said", " it"], sites=SITES, errors=True, per_position=False,
        edge_threshold=point.threshold / 4, nodes=NODES, edges=EDGES, figures=figures,
        curve=CURVE if complete else CURVE[:6], curve_features=CURVE_FEATURES if complete else CURVE_FEATURES[:6],
        crossings=CircuitCrossings(half=7, most=7, half_features=12, most_features=None), complete=complete)


LAMBDAS = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0]  # engine.circuits.mask.LAMBDAS (torch-free copy)
MASK_SIZES = [381, 360, 289, 165, 64, 42]
MASK_FAITH = [0.96, 0.96, 0.95, 1.04, 0.70, 0.34]
MASK_CURVE = [CurvePoint(lam, n, n - 34, f, 0.05, f - 0.01) for lam, n, f in zip(LAMBDAS, MASK_SIZES, MASK_FAITH)]
MASK_CURVE_FEATURES = [CurvePoint(lam, n - 60, n - 60, f * 0.8, 0.02, f * 0.8 - 0.02)
                       for lam, n, f in zip(LAMBDAS, MASK_SIZES, MASK_FAITH)]
MASK_NODES = [
    CircuitNode("resid_mid/error@15", "resid_mid", 0, 0.7, None, 15),
    CircuitNode("mlp_out/350@15", "mlp_out", 1, 0.5, 350, 15, "' was' after a pronoun"),
    CircuitNode("resid_mid/642@15", "resid_mid", 0, -0.2, 642, 15),
]


def mask_found() -> CircuitFound:
    """A mask circuit at lambda 64 (the curve's 4th point), error terms clean."""
    point = MASK_CURVE[3]
    figures = CircuitFigures(point.threshold, 3, 2, 2.18, 0.02, 2.25, 0.1, point.faithfulness, point.completeness,
                             point.plain)
    sites = [SiteInfo("resid_mid", "blocks.0.hook_resid_mid", "/w/saes/resid_mid-topk"), SITES[2]]
    return CircuitFound(
        circuit="mask", task="was_were", method="mask", metric="logit diff: right answer − wrong",
        pairs=40, held_out=20, tokens=["She"] * 15, sites=sites, errors=True, per_position=True,
        edge_threshold=0.05, nodes=MASK_NODES,
        edges=[CircuitEdge("mlp_out/350@15", "metric", 0.4), CircuitEdge("resid_mid/642@15", "mlp_out/350@15", -0.1),
               CircuitEdge("resid_mid/error@15", "metric", 0.3)],
        figures=figures, curve=MASK_CURVE, curve_features=MASK_CURVE_FEATURES)
