"""`saescope map SAE`: the feature map of an SAE (engine/geometry.py) in the terminal,
as JSON, or as a PNG for a paper. Registered in engine/cli.py.

Notes
- Options are checked (through `FeatureMapParams`, the protocol's own) and the SAE
  name resolved before torch is imported, so a typo fails in a second.
- Cluster descriptions need the SAE's index, read through its model: the model is
  loaded only when an index lies beside the SAE (`--no-describe` skips it, e.g.
  for a SmolLM2 SAE, whose model takes most of a minute to load on a CPU).
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def map_command(
    sae: str = typer.Argument(..., help="An SAE: a shipped name (mlp_out-topk), a folder, or release:RELEASE/SAE_ID."),
    method: str = typer.Option("auto", "--method", help="auto (UMAP when umap-learn is installed, else PCA), umap or pca."),
    clusters: int = typer.Option(12, "--clusters", help="k-means clusters of the decoder directions."),
    color: str = typer.Option("density", "--color", help="density (the SAE's sparsity.safetensors) or emergence (the run's emergence.json)."),
    seed: int = typer.Option(0, "--seed", help="Seed of UMAP and k-means."),
    png: Optional[Path] = typer.Option(None, "--png", help="Also write the map to this PNG file, with a colour bar."),
    describe: bool = typer.Option(True, "--describe/--no-describe", help="Describe the clusters from the SAE's index (loads the SAE's model)."),
    device: str = typer.Option("auto", "--device", help="Device of the model that reads the index: auto, cpu or cuda[:N]."),
    as_json: bool = typer.Option(False, "--json", help="Print the map as one JSON object (a FeatureMap) instead of a plot."),
) -> None:
    """Map an SAE's decoder directions in 2-D (UMAP or PCA), clustered and coloured by firing density."""
    import msgspec

    from engine.cli import fail, quiet_libraries
    from engine.errors import UserError
    from engine.protocol import FeatureMapParams

    quiet_libraries()
    try:
        params = msgspec.convert({"path": sae, "method": method, "clusters": clusters, "color": color, "seed": seed},
                                 FeatureMapParams)
    except msgspec.ValidationError as e:
        fail(f"bad option: {e}")
    from engine.cli_progress import cli_job
    from engine.geometry import check_color, feature_map, has_index, pick_method, resolve_sae
    from engine.saes import sae_folder

    try:
        path = resolve_sae(params.path)
        pick_method(params.method)  # a missing umap-learn fails before anything loads
        folder = sae_folder(path)
        check_color(folder, params.color)  # before a model loads for the descriptions
        view = None
        if describe and has_index(folder):
            from engine.inspect import open_view

            view = open_view(folder, device=device)
        with cli_job(as_json, "map") as job:
            fmap = feature_map(path, params.method, params.clusters, params.color, params.seed, job=job, view=view)
        if png is not None:
            from engine.render_map import write_png

            write_png(fmap, png)
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(msgspec.json.encode(fmap).decode())
        return
    from rich.console import Console

    from engine.render_map import render_map

    console = Console()
    console.print(render_map(fmap, width=min(console.width, 120), height=max(12, min(40, console.height - 8))))
    if png is not None:
        typer.echo(f"wrote {png}", err=True)
