"""`saescope graph SAE` and `saescope compare SAE_A SAE_B`: co-activation graphs
(engine/graph_report.py) in the terminal or as JSON. Registered in engine/cli.py.

Options go through the protocol's own parameter structs (engine/protocol_graph.py),
so the CLI, the engine and the Graph pane share one set of defaults and checks.
An SAE whose index lacks co-occurrence has its index rebuilt first, with progress.
"""

from __future__ import annotations

from typing import Optional

import typer

from engine.protocol_graph import (GRAPH_ANCHORS, GRAPH_MIN_COUNT, GRAPH_MIN_WEIGHT, GRAPH_RANDOM_DRAWS,
                                   GRAPH_SHARED_COSINE)

SAE_HELP = "An SAE: a shipped name (mlp_out-topk), a folder, or release:RELEASE/SAE_ID."
WEIGHT_HELP = "Edge weight: jaccard, cosine (of the activations over tokens) or count (tokens where both fire)."


def _params(kind, fields: dict):
    import msgspec

    from engine.cli import fail

    try:
        return msgspec.convert(fields, kind)
    except msgspec.ValidationError as e:
        fail(f"bad option: {e}")


def _views(paths: list[str], device: str):
    """Open each SAE, loading a model once for the SAEs that share it."""
    from engine.geometry import resolve_sae
    from engine.inspect import open_view
    from engine.saes import load_sae, model_spec_for

    views = []
    for path in paths:
        folder = resolve_sae(path)
        spec = model_spec_for(load_sae(folder))
        lm = next((v.lm for v in views if model_spec_for(v.sae) == spec), None)
        views.append(open_view(folder, device=device, lm=lm))
    return views


def graph_command(
    sae: str = typer.Argument(..., help=SAE_HELP),
    feature: Optional[int] = typer.Option(None, "--feature", "-f", help="Also list this feature's neighbours."),
    n: int = typer.Option(12, "--n", help="Neighbours listed for --feature."),
    weight: str = typer.Option("jaccard", "--weight", help=WEIGHT_HELP),
    min_weight: float = typer.Option(GRAPH_MIN_WEIGHT, "--min-weight", help="Edge rule: keep an edge whose weight is at least this ..."),
    min_count: int = typer.Option(GRAPH_MIN_COUNT, "--min-count", help="... and whose features fire together on at least this many tokens."),
    seed: int = typer.Option(0, "--seed", help="Seed of the Louvain communities."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (a GraphStats, then a GraphNode with --feature)."),
) -> None:
    """An SAE's co-activation graph: statistics, degree and strength distributions, communities, a feature's neighbours."""
    import msgspec

    from engine.cli import fail, quiet_libraries
    from engine.errors import UserError
    from engine.protocol_graph import GraphNodeParams, GraphParams

    quiet_libraries()
    fields = {"path": sae, "weight": weight, "min_weight": min_weight, "min_count": min_count, "seed": seed}
    params = _params(GraphParams, fields)
    node_params = _params(GraphNodeParams, {**fields, "feature": feature, "n": n}) if feature is not None else None
    from engine.cli_progress import cli_job
    from engine.graph_report import graph_node, graph_stats

    try:
        [view] = _views([params.path], device)
        with cli_job(as_json, "graph") as job:
            stats = graph_stats(view, params, job)
            node = graph_node(view, node_params, job) if node_params else None
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(msgspec.json.encode(stats).decode())
        if node is not None:
            typer.echo(msgspec.json.encode(node).decode())
        return
    from rich.console import Console

    from engine.render_graph import render_graph

    Console().print(render_graph(stats, node))


def compare_command(
    sae_a: str = typer.Argument(..., help=SAE_HELP),
    sae_b: str = typer.Argument(..., help="The SAE to compare with (same hook; the width may differ)."),
    feature: Optional[int] = typer.Option(None, "--feature", "-f", help="A feature of SAE_A: its best matches in SAE_B, by decoder and by structure."),
    n: int = typer.Option(10, "--n", help="Matches listed for --feature."),
    threshold: float = typer.Option(GRAPH_SHARED_COSINE, "--threshold", help="Decoder cosine at which a matched pair counts as shared."),
    anchors: float = typer.Option(GRAPH_ANCHORS, "--anchors", help="Fraction of the true pairs given to the anchored structural matching."),
    draws: int = typer.Option(GRAPH_RANDOM_DRAWS, "--draws", help="Random G(n, m) graphs for the baseline."),
    weight: str = typer.Option("jaccard", "--weight", help=WEIGHT_HELP),
    min_weight: float = typer.Option(GRAPH_MIN_WEIGHT, "--min-weight", help="Edge rule (both graphs): keep an edge whose weight is at least this ..."),
    min_count: int = typer.Option(GRAPH_MIN_COUNT, "--min-count", help="... and whose features fire together on at least this many tokens."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random graphs and the anchors."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N]."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (a GraphComparison)."),
) -> None:
    """Compare two SAEs: their graphs' degree distributions (JSD, against random graphs), the features they share, and whether graph structure finds a feature's partner."""
    import msgspec

    from engine.cli import fail, quiet_libraries
    from engine.errors import UserError
    from engine.protocol_graph import GraphCompareParams

    quiet_libraries()
    params = _params(GraphCompareParams, {
        "path": sae_a, "other": sae_b, "feature": feature, "n": n, "threshold": threshold, "anchors": anchors,
        "draws": draws, "weight": weight, "min_weight": min_weight, "min_count": min_count, "seed": seed})
    from engine.cli_progress import cli_job
    from engine.graph_report import check_comparable, graph_compare

    try:
        view_a, view_b = _views([params.path, params.other], device)
        check_comparable(view_a, view_b)  # before any index is rebuilt
        with cli_job(as_json, "compare") as job:
            result = graph_compare(view_a, view_b, params, job)
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(msgspec.json.encode(result).decode())
        return
    from rich.console import Console

    from engine.render_graph import render_comparison

    Console().print(render_comparison(result))
