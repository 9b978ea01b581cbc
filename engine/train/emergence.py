"""Feature emergence: when each of a run's features formed, from its decoder snapshots.

Each snapshot's decoder directions are matched to the reference decoder's (the finished
SAE's, or the latest snapshot of a run still training) by cosine. A reference feature
has *formed* at the first snapshot from which its matched cosine stays at or above the
threshold in every later snapshot. The emergence curve is the fraction formed against
training tokens.

Notes
- Matching is an optimal one-to-one assignment (scipy's Hungarian
  `linear_sum_assignment`, maximising the summed cosine) up to `HUNGARIAN_MAX`
  features, and each reference feature's nearest snapshot feature above that (greedy
  top-1, not one-to-one): the assignment costs O(d_sae^3). A running run's curve is
  asked for at every snapshot, so it is matched greedily above `LIVE_HUNGARIAN_MAX`;
  the finished run's curve is then computed once more, optimally.
- The baseline is a random dictionary (Gaussian directions, seeded) of the same shape,
  matched the same way: what chance alone gives.
- Two runs (seeds) are compared snapshot by snapshot at equal step counts, one-to-one:
  the fraction of features they share above `shared_threshold` against tokens.
- A finished run's result is cached in `emergence.json` in its folder (the feature map
  colours by it); a running run's is computed afresh each time.
"""

from __future__ import annotations

from pathlib import Path

import msgspec
import torch

from engine.errors import UserError
from engine.protocol import EMERGENCE_COSINE, SHARED_COSINE, DensityPoint, Emergence, EmergencePoint, SharedPoint
from engine.train import checkpoint as ckpt
from engine.train.config import TrainConfig
from engine.train.snapshots import list_snapshots, load_snapshot

HUNGARIAN_MAX = 2048
LIVE_HUNGARIAN_MAX = 512
CACHE = "emergence.json"
DENSITY_POINTS = 64  # the density histogram over training is thinned to about this many points


def unit_rows(w: torch.Tensor) -> torch.Tensor:
    w = w.float()
    return w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)


def match(reference: torch.Tensor, other: torch.Tensor, method: str) -> torch.Tensor:
    """Per reference row (unit directions [m, d]), the cosine of its matched row of
    `other` [m', d]: one-to-one optimal (`hungarian`; unmatched rows get 0 when m > m')
    or its nearest (`greedy`)."""
    cos = reference @ other.T
    if method == "greedy":
        return cos.max(dim=1).values
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(cos.numpy(), maximize=True)
    out = torch.zeros(len(reference))
    out[torch.as_tensor(rows)] = cos[torch.as_tensor(rows), torch.as_tensor(cols)]
    return out


def method_for(d_sae: int, live: bool = False) -> str:
    """Hungarian where it is cheap enough: up to `HUNGARIAN_MAX` features, and up to
    `LIVE_HUNGARIAN_MAX` for a running run (its curve is recomputed at every snapshot)."""
    return "hungarian" if d_sae <= (LIVE_HUNGARIAN_MAX if live else HUNGARIAN_MAX) else "greedy"


def formed_index(cosines: torch.Tensor, threshold: float) -> torch.Tensor:
    """Per feature (columns of `cosines` [snapshots, m]), the first snapshot from which
    every later one is at or above `threshold`; `len(cosines)` when the last is not."""
    above = cosines >= threshold
    # walking back from the last snapshot, the run of snapshots still above
    stays = torch.flip(torch.cumprod(torch.flip(above, [0]).int(), dim=0), [0]).bool()
    n = len(cosines)
    first = torch.where(stays, torch.arange(n).unsqueeze(1), n).min(dim=0).values
    return first


def _reference(run_dir: Path, snapshots) -> tuple[torch.Tensor, str, int]:
    """The reference decoder: the finished SAE's, else the latest snapshot's."""
    weights = run_dir / "sae_weights.safetensors"
    if (run_dir / "cfg.json").exists() and weights.exists():
        from safetensors.torch import load_file

        cfg = TrainConfig.load(run_dir)
        return unit_rows(load_file(str(weights))["W_dec"]), "final", cfg.steps
    step, path = snapshots[-1]
    return load_snapshot(path)["W_dec"], "latest", step


def _density(run_dir: Path) -> tuple[list[float], list[DensityPoint]]:
    try:
        records = ckpt.read_metrics(run_dir)
    except UserError:
        return [], []
    hists = [r for r in records if r.get("kind") == "step" and r.get("density_histogram")]
    stride = max(1, len(hists) // DENSITY_POINTS)
    keep = hists[::stride] + ([hists[-1]] if hists and (len(hists) - 1) % stride else [])
    edges = hists[0]["density_histogram"]["edges"] if hists else []
    return edges, [DensityPoint(r["step"] + 1, r["tokens"], r["density_histogram"]["counts"],
                                r["density_histogram"].get("never_fired", 0)) for r in keep]


def emergence(path, threshold: float = EMERGENCE_COSINE, against=None, shared_threshold: float = SHARED_COSINE,
              job=None) -> Emergence:
    """The emergence of a run's features (see the module notes). `job`: an engine job
    (cancellation and progress), or None."""
    run_dir = Path(path)
    cfg = TrainConfig.load(run_dir)
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        raise UserError(f"{run_dir} has no decoder snapshots: train it with --snapshot-every N "
                        "(0, the default, takes about 24; -1 turns them off)")
    if not 0 < threshold <= 1 or not 0 < shared_threshold <= 1:
        raise UserError("cosine thresholds must lie in (0, 1]")
    cached = _cached(run_dir, threshold, snapshots)
    result = cached or _compute(run_dir, cfg, snapshots, threshold, job)
    if against is not None:
        result = msgspec.structs.replace(result, against=str(against), shared_threshold=shared_threshold,
                                         shared=shared_curve(run_dir, Path(against), shared_threshold, job))
    return result


def _compute(run_dir: Path, cfg: TrainConfig, snapshots, threshold: float, job) -> Emergence:
    reference, kind, reference_step = _reference(run_dir, snapshots)
    method = method_for(len(reference), live=kind == "latest")
    cosines, fired = [], []
    for i, (step, path) in enumerate(snapshots):
        if job is not None:
            job.check()
            job.progress(i / len(snapshots), f"matching snapshot {i + 1}/{len(snapshots)}")
        snap = load_snapshot(path)
        cosines.append(match(reference, snap["W_dec"], method))
        fired.append(snap["first_fired"])
    cos = torch.stack(cosines)
    first = formed_index(cos, threshold)
    steps = [s for s, _ in snapshots]
    formed_step = [steps[i] if i < len(steps) else reference_step for i in first.tolist()]
    first_fired = fired[-1]
    points = [EmergencePoint(step=s, tokens=s * cfg.batch_size, formed=(first <= i).float().mean().item(),
                             matched=(cos[i] >= threshold).float().mean().item(),
                             mean_cosine=cos[i].mean().item(),
                             fired=((first_fired >= 0) & (first_fired < s)).float().mean().item())
              for i, s in enumerate(steps)]
    random = unit_rows(torch.randn(reference.shape, generator=torch.Generator().manual_seed(0)))
    baseline = match(reference, random, method)
    edges, density = _density(run_dir)
    result = Emergence(
        path=str(run_dir), arch=cfg.arch, d_sae=cfg.d_sae, reference=kind, reference_step=reference_step,
        method=method, threshold=threshold, points=points,
        baseline_matched=(baseline >= threshold).float().mean().item(), baseline_mean_cosine=baseline.mean().item(),
        emergence_step=formed_step, first_fired_step=[f if f >= 0 else None for f in first_fired.tolist()],
        density_edges=edges, density=density)
    if kind == "final":
        from engine.atomic import atomic_write_text

        atomic_write_text(run_dir / CACHE, msgspec.json.encode(result).decode() + "\n")
    return result


def _cached(run_dir: Path, threshold: float, snapshots) -> Emergence | None:
    """The finished run's cached result, if it answers this question."""
    try:
        result = msgspec.json.decode((run_dir / CACHE).read_bytes(), type=Emergence)
    except (OSError, msgspec.DecodeError, msgspec.ValidationError):
        return None
    if result.threshold != threshold or [p.step for p in result.points] != [s for s, _ in snapshots]:
        return None
    return result if result.reference == "final" else None


def shared_curve(run_a: Path, run_b: Path, threshold: float = SHARED_COSINE, job=None) -> list[SharedPoint]:
    """The fraction of features two runs share (one-to-one, cosine >= `threshold`),
    at every step count both have a snapshot of."""
    cfg_a, cfg_b = TrainConfig.load(run_a), TrainConfig.load(run_b)
    if (cfg_a.d_sae, cfg_a.hook, cfg_a.model) != (cfg_b.d_sae, cfg_b.hook, cfg_b.model):
        raise UserError(f"{run_a} and {run_b} are not comparable: they differ in width, hook or model")
    b = dict(list_snapshots(run_b))
    common = [(s, p) for s, p in list_snapshots(run_a) if s in b]
    if not common:
        raise UserError(f"{run_a} and {run_b} have no snapshots at the same step")
    out = []
    for i, (step, path) in enumerate(common):
        if job is not None:
            job.check()
            job.progress(i / len(common), f"matching the two runs at step {step}")
        cos = match(load_snapshot(path)["W_dec"], load_snapshot(b[step])["W_dec"], method_for(cfg_a.d_sae))
        out.append(SharedPoint(step, step * cfg_a.batch_size, (cos >= threshold).float().mean().item(),
                               cos.mean().item()))
    return out


def emergence_steps(path) -> list[int | None]:
    """Per feature of a finished run, the step from which it stayed formed (cached)."""
    return emergence(path).emergence_step

