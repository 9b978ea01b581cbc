"""`saescope`: the headless commands, and the launcher of the terminal app.

Every command is a thin caller of an engine function. Bad input raises
`UserError`, which becomes one line on stderr and exit code 2, never a traceback.

Notes
- `saescope` with no command starts the TUI by exec'ing `python -m tui`, so this
  process (part of `engine/`) never imports textual, and the app never imports torch.
- Heavy libraries are imported inside commands: `saescope --help` stays instant.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Optional

import typer

from engine.errors import UserError

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, no_args_is_help=False,
                  help="saescope: train, inspect and ablate sparse autoencoder features.")
engine_app = typer.Typer(help="Run the engine worker process.", no_args_is_help=True)
recipe_app = typer.Typer(help="Rebuild the embedded defaults under weights/.", no_args_is_help=True)
app.add_typer(engine_app, name="engine")
app.add_typer(recipe_app, name="recipe")

ModelOpt = typer.Option("default", "--model", "-m", help="Model spec: default, smollm2-135m, a folder, or a TransformerLens name.")
DeviceOpt = typer.Option("auto", "--device", help="auto (CUDA when present), cpu or cuda[:N].")
DtypeOpt = typer.Option("float32", "--dtype", help="float32, bfloat16 or float16.")
JsonOpt = typer.Option(False, "--json", help="Print one JSON object instead of a table.")
ContextOpt = typer.Option(None, "--context", help="Tokens per window, BOS included (default: the model's context, at most 256).")
CorpusOpt = typer.Option(None, "--corpus", help="Text files, a folder, a saved HF dataset or shard (default: the shipped corpus, in the model's tokens).")


def quiet_libraries() -> None:
    """Keep library chatter (warnings, progress bars) off the user's screen."""
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TQDM_DISABLE", "1")
    for name in ("transformers", "transformer_lens", "sae_lens", "root"):
        logging.getLogger(name).setLevel(logging.ERROR)
    logging.getLogger().setLevel(logging.ERROR)


def fail(message: str) -> None:
    typer.echo(f"saescope: {message}", err=True)
    raise typer.Exit(2)


@app.callback(invoke_without_command=True)
def main_callback(
    ctx: typer.Context,
    engine: Optional[str] = typer.Option(None, "--engine", help="Command line that starts an engine speaking --stdio, e.g. \"ssh HOST saescope engine serve --stdio\"."),
    connect: Optional[str] = typer.Option(None, "--connect", help="HOST:PORT of an engine started with `saescope engine serve --listen`."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SAESCOPE_TOKEN", help="Token for --connect."),
    model: str = typer.Option("default", "--model", "-m", help="Model the app asks the engine to load."),
) -> None:
    """With no command: start the terminal app (and a local engine unless told otherwise)."""
    if ctx.invoked_subcommand is not None:
        return
    args = [sys.executable, "-m", "tui", "--model", model]
    if engine:
        args += ["--engine", engine]
    if connect:
        args += ["--connect", connect]
    if token:
        args += ["--token", token]
    os.execv(sys.executable, args)


@app.command()
def models(as_json: bool = JsonOpt) -> None:
    """List the models that can be loaded here, and why not for the rest."""
    from engine.models import available_models

    rows = available_models()
    if as_json:
        typer.echo(json.dumps(rows))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("spec", "model", "here?", "why")
    for r in rows:
        table.add_row(r["spec"], r["name"], "[green]yes[/]" if r["available"] else "[red]no[/]", r["why"])
    Console().print(table)


@app.command()
def predict(
    text: str = typer.Argument(..., help="The prompt."),
    model: str = ModelOpt,
    top: int = typer.Option(10, "--top", "-n", help="How many tokens to show."),
    device: str = DeviceOpt,
    dtype: str = DtypeOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Print the model's next-token distribution after TEXT."""
    quiet_libraries()
    from engine.models import load_model
    from engine.predict import predict as run_predict

    try:
        if not text.strip():  # before the model load: fail fast on the obvious
            raise UserError("the prompt is empty")
        result = run_predict(load_model(model, device, dtype), text, top)
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]{result['model']}[/]  tokens: " + " ".join(repr(t) for t in result["tokens"]))
    table = Table("#", "token", "prob", "")
    for i, row in enumerate(result["top"], 1):
        table.add_row(str(i), repr(row["token"]), f"{row['prob']:.4f}", "█" * round(30 * row["prob"]))
    console.print(table)


@app.command()
def train(
    hook: str = typer.Option(..., "--hook", help="Hook point, e.g. blocks.0.hook_mlp_out."),
    arch: list[str] = typer.Option(["topk"], "--arch", help="relu, jumprelu, topk or batchtopk; repeat to train side by side."),
    out: Path = typer.Option(..., "--out", help="Run folder (one sub-folder per run when several)."),
    d_sae: int = typer.Option(2048, "--d-sae", help="Number of features."),
    k: int = typer.Option(32, "--k", help="Active features per token (topk, batchtopk)."),
    l1: float = typer.Option(5.0, "--l1", help="Sparsity coefficient (relu: L1; jumprelu: L0)."),
    threshold_init: float = typer.Option(0.1, "--threshold-init", help="Initial JumpReLU threshold (jumprelu)."),
    tokens: int = typer.Option(2_000_000, "--tokens", help="Training tokens."),
    seed: list[int] = typer.Option([0], "--seed", help="Initialisation seed; repeat for several."),
    lr: float = typer.Option(4e-4, "--lr", help="Peak learning rate."),
    batch_size: int = typer.Option(4096, "--batch-size", help="Activations per step."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints."),
    eval_every: int = typer.Option(0, "--eval-every", help="Steps between spliced-in evaluations (0: at the end)."),
    eval_tokens: int = typer.Option(65_536, "--eval-tokens", help="Held-out tokens for each evaluation."),
    snapshot_every: int = typer.Option(0, "--snapshot-every", help="Steps between decoder snapshots, for `saescope emergence` (0: about 24 per run; -1: none)."),
    model: str = ModelOpt,
    context: int = typer.Option(0, "--context", help="Tokens per window, BOS included (0: the model's context, at most 256)."),
    corpus: Optional[str] = CorpusOpt,
    device: str = DeviceOpt,
    config: Optional[Path] = typer.Option(None, "--config", help="JSON file: a list of run settings (overrides the flags)."),
    resume: bool = typer.Option(False, "--resume", help="Continue the stopped (ctrl+c) or killed run(s) in --out from the last checkpoint."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON lines of metrics instead of a progress bar."),
    distributed: int = typer.Option(0, "--distributed", help="Data-parallel on N ranks of this machine: the same command under torchrun (--batch-size is the global batch)."),
    spread: bool = typer.Option(False, "--spread", help="With several ranks: deal the runs to the ranks (each trains its own SAEs on whole batches) instead of data-parallel."),
) -> None:
    """Train SAEs on a model's activations (several side by side from one model pass)."""
    quiet_libraries()
    from engine.train.runs import plan_runs, run_training_cli

    dirs: list[Path] = []
    try:
        cfgs, dirs = plan_runs(hook=hook, archs=arch, seeds=seed, out=out, config=config, model=model,
                               d_sae=d_sae, k=k, l1=l1, threshold_init=threshold_init, tokens=tokens, lr=lr, batch_size=batch_size,
                               checkpoint_every=checkpoint_every, eval_every=eval_every,
                               eval_tokens=eval_tokens, context=context, snapshot_every=snapshot_every)
        if spread and not distributed:
            from engine.distributed import under_torchrun

            if not under_torchrun():
                raise UserError("--spread deals the runs to ranks: use it with --distributed N (or under torchrun)")
        if distributed:
            from engine.train.launch import run_distributed_cli

            raise typer.Exit(run_distributed_cli(distributed, cfgs, dirs, resume, spread))
        results = run_training_cli(cfgs, dirs, resume=resume, as_json=as_json, corpus=corpus, device=device,
                                   spread=spread)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:  # ctrl+c: the runs stopped, checkpointed (their state.json: `stopped`)
        from engine.train.runs import stopped_line

        typer.echo(f"saescope: {stopped_line(dirs)}", err=True)
        raise typer.Exit(130) from None
    if as_json:
        for r in results:
            typer.echo(json.dumps({"kind": "final", **r}))


@app.command("eval")
def eval_sae(
    sae_dir: Path = typer.Argument(..., help="An SAE folder in sae_lens format."),
    tokens: int = typer.Option(65_536, "--tokens", help="Held-out tokens to evaluate on."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec (default: the one the SAE names)."),
    context: Optional[int] = ContextOpt,
    corpus: Optional[str] = CorpusOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Evaluate an SAE spliced into its model: reconstruction, sparsity, CE and KL scores."""
    quiet_libraries()
    from engine.cli_progress import cli_job
    from engine.models import load_model
    from engine.saes import load_sae, model_spec_for
    from engine.train.runs import evaluate_folder

    try:
        lm = load_model(model or model_spec_for(load_sae(sae_dir)), device)
        with cli_job(as_json, "eval") as job:
            result = evaluate_folder(sae_dir, tokens, lm=lm, corpus=corpus, context=context, job=job)
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console

    from engine.render import render_eval

    Console().print(render_eval(result, title=str(sae_dir)))


@app.command()
def index(
    sae_dir: Path = typer.Argument(..., help="An SAE folder in sae_lens format."),
    tokens: int = typer.Option(1 << 20, "--tokens", help="Corpus tokens to index."),
    corpus: Optional[str] = CorpusOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec (default: the one the SAE names)."),
    context: Optional[int] = ContextOpt,
    device: str = DeviceOpt,
    rebuild: bool = typer.Option(False, "--rebuild", help="Rebuild even if a current index exists."),
    as_json: bool = typer.Option(False, "--json", help="Progress as JSON lines on stderr, the result as one JSON object."),
    distributed: int = typer.Option(0, "--distributed", help="Index on N ranks of this machine: the same command under torchrun, each rank a share of the windows, merged exactly."),
) -> None:
    """Build the feature index (top examples, histograms, densities) beside the SAE."""
    quiet_libraries()
    import contextlib
    import time

    from engine.cli_progress import cli_job
    from engine.distributed import check_world, rank_device, ranks, shutdown, strip_option, under_torchrun
    from engine.inspect import open_view
    from engine.jobs import Job
    from engine.models import pick_device

    if distributed and not under_torchrun():  # under torchrun already: this process is one rank
        from engine.index_distributed import relaunch

        try:
            check_world(distributed)
        except UserError as e:
            fail(str(e))
        raise typer.Exit(relaunch(distributed, strip_option(sys.argv[1:], "--distributed")))
    r = ranks(device)  # the one collective gathers CPU objects, on gloo whatever the backend
    try:
        view = open_view(sae_dir, model, corpus, tokens, context=context, device=rank_device(pick_device(device), r))
        t0 = time.time()
        with cli_job(as_json, "index") if r.is_main else contextlib.nullcontext(Job()) as job:
            idx = view.ensure_index(job=job, rebuild=rebuild, ranks=r)
    except UserError as e:
        if r.is_main:
            fail(str(e))
        raise typer.Exit(2)
    finally:
        shutdown()
    if not r.is_main:
        return  # only rank 0 prints (it holds the merged index)
    dt = time.time() - t0
    alive = int((idx.fire_count > 0).sum())
    if as_json:
        typer.echo(json.dumps({"sae": str(sae_dir), "tokens": idx.meta["tokens"], "d_sae": view.d_sae,
                               "alive": alive, "seconds": round(dt, 3)}))
        return
    typer.echo(f"index of {idx.meta['tokens']:,} tokens ready in {dt:.1f}s: {alive}/{view.d_sae} features fire "
               "in the index (the dead fraction is `saescope eval`'s, on held-out tokens)", err=True)


@app.command()
def inspect(
    sae_dir: Path = typer.Argument(..., help="An SAE folder in sae_lens format."),
    feature: int = typer.Argument(..., help="Feature number."),
    top: int = typer.Option(10, "--top", "-n", help="How many top examples."),
    tokens: Optional[int] = typer.Option(None, "--tokens", help="Corpus tokens of the index (default: the existing index, else 1M; built if missing)."),
    corpus: Optional[str] = CorpusOpt,
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec (default: the one the SAE names)."),
    context: Optional[int] = ContextOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show what a feature means: top examples, histogram, logit effects, neighbours."""
    quiet_libraries()
    from engine.cli_progress import cli_job
    from engine.inspect import open_view

    try:
        view = open_view(sae_dir, model, corpus, tokens, context=context, device=device)
        view.check_feature(feature)
        if view.index is None:
            with cli_job(as_json, "index") as job:
                view.ensure_index(job=job)
        page = view.feature_page(feature, top=top)
        dead = view.dead_figure()
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps({**page, "sae_dead": dead}))
        return
    from rich.console import Console

    from engine.render import render_feature_page

    Console().print(render_feature_page(page, dead))


@app.command()
def ablate(
    upstream: Path = typer.Option(..., "--upstream", help="Upstream SAE folder (e.g. on hook_resid_mid)."),
    downstream: Path = typer.Option(..., "--downstream", help="Downstream SAE folder (e.g. on hook_mlp_out)."),
    prompt: str = typer.Option(..., "--prompt", help="The prompt."),
    position: Optional[int] = typer.Option(None, "--position", help="Prompt token (from 0) whose prediction is explained; default the last."),
    feature: list[int] = typer.Option([], "--feature", help="Upstream feature(s) to ablate: the tree then shows what they drive."),
    mode: str = typer.Option("zero", "--mode", help="zero or mean."),
    method: str = typer.Option("attribution", "--method", help="exact or attribution."),
    top: int = typer.Option(8, "--top", help="Children per node."),
    depth: int = typer.Option(2, "--depth", help="Levels to expand."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec (default: the one the SAEs name)."),
    context: Optional[int] = ContextOpt,
    corpus: Optional[str] = CorpusOpt,
    device: str = DeviceOpt,
    uninterpretable: bool = typer.Option(False, "--uninterpretable", help="List causally important features whose top examples share no obvious token."),
    as_json: bool = JsonOpt,
) -> None:
    """Ablate SAE features and show, as a tree, which features and logits they drive."""
    quiet_libraries()
    from engine.cli_progress import cli_job
    from engine.corpus import corpus_for
    from engine.models import load_model
    from engine.saes import load_sae, model_spec_for
    from engine.tree import ablation_tree, important_uninterpretable

    try:
        if not prompt.strip():
            raise UserError("the prompt is empty")
        lm = load_model(model or model_spec_for(load_sae(upstream)), device)
        text = corpus_for(corpus, lm)
        with cli_job(as_json, "ablate") as job:
            if uninterpretable:
                result = important_uninterpretable(lm, [str(upstream), str(downstream)], prompt, position,
                                                   method, n=top, corpus=text, context=context, job=job)
            else:
                result = ablation_tree(lm, str(upstream), str(downstream), prompt, position, feature or None,
                                       mode, method, top, depth, corpus=text, context=context, job=job)
    except UserError as e:
        fail(str(e))
    if as_json:
        typer.echo(json.dumps(result))
        return
    from rich.console import Console

    from engine.render import render_tree, render_uninterpretable

    Console().print(render_uninterpretable(result) if uninterpretable else render_tree(result))


@app.command()
def circuit(
    task: str = typer.Option(..., "--task", help="A JSON-lines task file, or a shipped task: was_were, close_paren, from_import."),
    sae: list[str] = typer.Option(..., "--sae", help="An SAE site (folder); repeat, upstream first."),
    method: Optional[str] = typer.Option(None, "--method", help="attribution (default), ig (integrated gradients) or mask (a binary mask over latents trained for the metric)."),
    ig_steps: Optional[int] = typer.Option(None, "--ig-steps", help="Integrated-gradient steps (default 10)."),
    lam: Optional[float] = typer.Option(None, "--lambda", help="--method mask: the mask's sparsity weight (larger: smaller circuit); instead of --threshold."),
    mask_steps: Optional[int] = typer.Option(None, "--mask-steps", help="--method mask: Adam steps per mask (default 150)."),
    threshold: Optional[float] = typer.Option(None, "--threshold", help="Keep nodes with |effect| above it (default: the smallest swept circuit with faithfulness 0.8)."),
    edge_threshold: Optional[float] = typer.Option(None, "--edge-threshold", help="Keep edges with |effect| above it (default: a quarter of the node threshold)."),
    sweep: bool = typer.Option(False, "--sweep", help="Also sweep thresholds: faithfulness and completeness against circuit size (always without --threshold)."),
    features_only: bool = typer.Option(False, "--features-only", help="Leave error nodes out of the circuit."),
    per_position: bool = typer.Option(False, "--per-position", help="Nodes per (feature, position) instead of summed over positions."),
    patch_state: Optional[str] = typer.Option(None, "--patch-state", help="Single-prompt tasks: mean (default) or zero."),
    max_nodes: Optional[int] = typer.Option(None, "--max-nodes", help="The sweep's largest circuit (default 2000)."),
    points: Optional[int] = typer.Option(None, "--points", help="Circuits on the sweep's log grid (default 16)."),
    verify: int = typer.Option(0, "--verify", help="Also measure the N largest nodes and edges exactly, by ablation."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model spec (default: the one the SAEs name)."),
    context: Optional[int] = ContextOpt,
    corpus: Optional[str] = CorpusOpt,
    device: str = DeviceOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Find the SAE features that carry a task's behaviour, as a circuit, and measure its faithfulness."""
    quiet_libraries()
    import msgspec

    from engine.circuits.discover import find_circuit
    from engine.circuits.tasks import load_task
    from engine.cli_progress import cli_job
    from engine.inspect import open_view
    from engine.models import load_model
    from engine.protocol import CircuitFindParams
    from engine.saes import load_sae, model_spec_for

    if lam is not None and (method != "mask" or threshold is not None):
        fail("--lambda goes with --method mask, instead of --threshold")
    if method == "mask" and threshold is not None:
        fail("--method mask takes --lambda, not --threshold")
    threshold = lam if lam is not None else threshold
    given = {"method": method, "ig_steps": ig_steps, "mask_steps": mask_steps, "threshold": threshold,
             "edge_threshold": edge_threshold,
             "patch_state": patch_state, "max_nodes": max_nodes, "points": points, "context": context}
    try:
        params = msgspec.convert({"task": task, "saes": sae, "sweep": sweep, "errors": not features_only,
                                  "per_position": per_position, **{k: v for k, v in given.items() if v is not None}},
                                 CircuitFindParams)
    except msgspec.ValidationError as e:
        fail(f"bad option: {e}")
    try:
        lm = load_model(model or model_spec_for(load_sae(sae[0])), device)
        the_task = load_task(task, lm)
        views = [open_view(p, corpus=corpus, lm=lm, context=context) for p in sae]
        with cli_job(as_json, "circuit") as job:
            builder, found = find_circuit(lm, views, sae, the_task, params, job)
            checked = None
            if verify:
                checked = builder.verify([n.id for n in found.nodes[:verify]],
                                         [[e.source, e.target] for e in
                                          sorted(found.edges, key=lambda e: -abs(e.effect))[:verify]], job)
    except UserError as e:
        fail(str(e))
    if as_json:
        out = msgspec.to_builtins(found)
        if checked is not None:
            out["verified"] = msgspec.to_builtins(checked)
        typer.echo(json.dumps(out))
        return
    from rich.console import Console

    from engine.render import render_circuit

    Console().print(render_circuit(found, checked))


from engine.cli_map import map_command  # noqa: E402 (its body lives there: this file is long)

app.command("map")(map_command)

from engine.cli_emergence import emergence_command  # noqa: E402 (its body lives there: this file is long)

app.command("emergence")(emergence_command)

from engine.cli_graph import compare_command, graph_command  # noqa: E402 (their bodies live there)

app.command("graph")(graph_command)
app.command("compare")(compare_command)


@engine_app.command("serve")
def engine_serve(
    stdio: bool = typer.Option(False, "--stdio", help="Speak the protocol on stdin/stdout."),
    listen: Optional[str] = typer.Option(None, "--listen", help="HOST:PORT to listen on (loopback by default)."),
    token: Optional[str] = typer.Option(None, "--token", envvar="SAESCOPE_TOKEN", help="Token clients must send (--listen); generated when absent."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Model to load at start (default: on request)."),
    memory_budget: Optional[str] = typer.Option(None, "--memory-budget", envvar="SAESCOPE_MEMORY_BUDGET", help="Bytes the open SAEs, indexes and trees may hold, e.g. 4G (default 4G); the least recently used are closed (and reopened on demand) beyond it."),
) -> None:
    """Run the engine: JSON lines on stdio, or on a TCP port with a token."""
    quiet_libraries()
    from engine.server import serve_stdio, serve_tcp
    from engine.workspace import parse_size

    if stdio == bool(listen):
        fail("give exactly one of --stdio or --listen HOST:PORT")
    try:
        budget = parse_size(memory_budget) if memory_budget else None
        if stdio:
            serve_stdio(preload=model, budget=budget)
        else:
            serve_tcp(listen, token, preload=model, budget=budget)
    except UserError as e:
        fail(str(e))


@recipe_app.command("default-model")
def recipe_default_model(
    tokens: int = typer.Option(20_000_000, help="Training tokens for the model."),
    seed: int = typer.Option(0, help="Seed for every random choice."),
    out: Optional[Path] = typer.Option(None, help="Model folder (default weights/mini-gelu-1l)."),
    corpus_out: Optional[Path] = typer.Option(None, help="Shard folder (default weights/corpus)."),
) -> None:
    """Rebuild the corpus, tokenizer, mini-gelu-1l and the corpus shard (about 40 min on 2 cores)."""
    from engine.recipes import mini_gelu

    argv = ["--tokens", str(tokens), "--seed", str(seed)]
    argv += ["--out", str(out)] if out else []
    argv += ["--corpus-out", str(corpus_out)] if corpus_out else []
    mini_gelu.main(argv)


RecipeArgs = {"allow_extra_args": True, "ignore_unknown_options": True}  # passed on to the recipe's own parser


def _recipe(main, args: list[str]) -> None:
    quiet_libraries()
    try:
        main(args)
    except UserError as e:
        fail(str(e))


@recipe_app.command("default-saes", context_settings=RecipeArgs)
def recipe_default_saes(ctx: typer.Context) -> None:
    """Retrain the default SAEs under weights/saes/ (see engine/recipes/default_saes.py)."""
    from engine.recipes import default_saes

    _recipe(default_saes.main, ctx.args)


@recipe_app.command("arch-sweep", context_settings=RecipeArgs)
def recipe_arch_sweep(ctx: typer.Context) -> None:
    """The sparsity sweep behind the default ReLU and JumpReLU settings (see engine/recipes/arch_sweep.py)."""
    from engine.recipes import arch_sweep

    _recipe(arch_sweep.main, ctx.args)


@recipe_app.command("seed-curve", context_settings=RecipeArgs)
def recipe_seed_curve(ctx: typer.Context) -> None:
    """The fraction of features two seeds share against training tokens (see engine/recipes/seed_curve.py)."""
    from engine.recipes import seed_curve

    _recipe(seed_curve.main, ctx.args)


@recipe_app.command("smollm2-saes", context_settings=RecipeArgs)
def recipe_smollm2_saes(ctx: typer.Context) -> None:
    """Train, evaluate and index TopK SAEs on SmolLM2-135M's residual stream at layers 3, 7, 11, 15."""
    from engine.recipes import smollm2_saes

    _recipe(smollm2_saes.main, ctx.args)


@recipe_app.command("tasks", context_settings=RecipeArgs)
def recipe_tasks(ctx: typer.Context) -> None:
    """Rebuild the circuit tasks under weights/tasks/ (another model: --model M) from the corpus."""
    from engine.recipes import tasks

    _recipe(tasks.main, ctx.args)


def main() -> None:
    from engine.runtime import keep_big_blocks

    keep_big_blocks()
    app()


if __name__ == "__main__":
    main()

