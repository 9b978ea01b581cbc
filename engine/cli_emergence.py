"""`saescope emergence RUN`: when a training run's features formed (engine/train/emergence.py),
drawn in the terminal or printed as JSON. Registered in engine/cli.py.

A folder of runs trained side by side shows each run's curve; `--against OTHER` adds
the fraction of features two runs (two seeds) share, against training tokens.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from engine.protocol import EMERGENCE_COSINE, SHARED_COSINE


def emergence_command(
    run: Path = typer.Argument(..., help="A training run folder, or a folder of runs trained side by side."),
    threshold: float = typer.Option(EMERGENCE_COSINE, "--threshold", help="Decoder cosine to the final feature at which a feature counts as formed."),
    against: Optional[Path] = typer.Option(None, "--against", help="Another run (e.g. another seed): the fraction of features both share, over training."),
    shared_threshold: float = typer.Option(SHARED_COSINE, "--shared-threshold", help="Cosine at which two runs share a feature (with --against)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object per run (an Emergence) instead of plots."),
) -> None:
    """Show when a run's features emerged: the fraction formed against tokens, beside a random baseline."""
    import msgspec

    from engine.cli import fail, quiet_libraries
    from engine.errors import UserError

    quiet_libraries()
    from engine.cli_progress import cli_job
    from engine.train.config import run_folders
    from engine.train.emergence import emergence

    results = []
    try:
        for folder in run_folders(run):
            with cli_job(as_json, f"emergence {folder.name}") as job:
                results.append(emergence(folder, threshold, against, shared_threshold, job=job))
    except UserError as e:
        fail(str(e))
    if as_json:
        for r in results:
            typer.echo(msgspec.json.encode(r).decode())
        return
    from rich.console import Console

    from engine.render_emergence import render_emergence

    Console().print(render_emergence(results))
