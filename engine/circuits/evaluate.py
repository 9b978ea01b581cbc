"""Faithfulness and completeness of circuits, by real forward passes with nodes mean-ablated.

For a circuit C on the held-out examples (means over rows of the metric):
    faithfulness = (m(C) - m(empty)) / (m(M) - m(empty))
    completeness = (m(M minus C) - m(empty)) / (m(M) - m(empty))
where `m(M)` is the model itself, `m(empty)` every node of every site ablated, and a
node outside the evaluated set takes its mean over the patch prompts of the
discovery examples, per position (`means`; for single-prompt tasks the patch state:
the mean over the discovery prompts, or zero). A circuit without error nodes leaves
every error term ablated in `m(C)` and kept in `m(M minus C)`.

`sweep` evaluates the circuits that thresholds on |effect| give, at node counts on
a log grid (each threshold halfway between the |effects| of the last node kept and
the first left out), with and without error nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from engine.circuits.effects import NodeEffects
from engine.circuits.stack import Keep, Metric, SiteStack, SiteState


@dataclass
class Point:
    threshold: float
    nodes: int  # nodes in the circuit
    features: int  # of which features
    faithfulness: float
    completeness: float
    plain: float | None = None  # m(C) / m(M)


@dataclass
class Baseline:
    """`m(M)` and `m(empty)` on the held-out examples."""

    model: float
    empty: float

    def ratio(self, m: float) -> float:
        span = self.model - self.empty
        return float("nan") if abs(span) < 1e-12 else (m - self.empty) / span

    def plain(self, m: float) -> float:
        """m(C) / m(M), the ratio without the empty circuit's baseline (seed 003's)."""
        return float("nan") if abs(self.model) < 1e-12 else m / self.model


def keep_masks(effects: NodeEffects, threshold: float, errors: bool) -> dict[int, Keep]:
    """The circuit of nodes with |effect| > threshold, as what each site keeps."""
    return {i: Keep(f.abs() > threshold, (e.abs() > threshold) if errors else torch.zeros_like(e, dtype=torch.bool))
            for i, (f, e) in enumerate(zip(effects.features, effects.errors))}


def _error_mask(e: torch.Tensor, T: int) -> torch.Tensor:
    """A site's error mask as [T]: a summed node (one value) stands for every position."""
    return e.expand(T) if e.numel() == 1 else e


def _full(keep: dict[int, Keep], T: int, invert: bool = False) -> dict[int, Keep]:
    """`keep` (or, with `invert`, its complement) with error masks per position; the
    BOS is kept either way (it is never a node)."""
    out = {}
    for i, k in keep.items():
        e = _error_mask(k.e, T)
        e = (~e if invert else e).clone()
        e[0] = True
        out[i] = Keep(~k.f if invert else k.f, e)
    return out


def size(keep: dict[int, Keep], summed_errors: bool) -> tuple[int, int]:
    """(nodes, features) in a circuit; a summed error node counts once per site."""
    feats = sum(int(k.f.sum()) for k in keep.values())
    errs = sum(int(k.e.any()) if summed_errors else int(k.e.sum()) for k in keep.values())
    return feats + errs, feats


class Evaluator:
    """Ablated passes over the held-out examples, with the baselines computed once."""

    def __init__(self, stack: SiteStack, tokens: torch.Tensor, metric: Metric, means: list[SiteState], job=None):
        self.stack, self.tokens, self.metric, self.means = stack, tokens, metric, means
        T = tokens.shape[1]
        nothing = {i: Keep(torch.zeros(T, m.f.shape[-1], dtype=torch.bool, device=tokens.device),
                           torch.eye(1, T, dtype=torch.bool, device=tokens.device)[0])
                   for i, m in enumerate(means)}
        self.baseline = Baseline(float(stack.metric(tokens, metric, job).mean()), self.m(nothing, job))

    def m(self, keep: dict[int, Keep], job=None) -> float:
        return float(self.stack.ablated(self.tokens, self.metric, keep, self.means, job=job).mean())

    def evaluate(self, keep: dict[int, Keep], job=None) -> tuple[float, float, float, float]:
        """(m(C), m(M minus C), faithfulness, completeness); `job` can cancel the passes."""
        T = self.tokens.shape[1]
        m_c, m_rest = self.m(_full(keep, T), job), self.m(_full(keep, T, invert=True), job)
        return m_c, m_rest, self.baseline.ratio(m_c), self.baseline.ratio(m_rest)


def count_grid(total: int, points: int = 24) -> list[int]:
    """Node counts from 1 to `total` on a log grid."""
    if total <= 0:
        return []
    grid = {max(1, round(math.exp(k * math.log(total) / max(1, points - 1)))) for k in range(points)}
    return sorted(grid | {total})


def threshold_for(values: torch.Tensor, n: int) -> float:
    """The threshold that keeps the `n` largest of `values` (|effects|): halfway between
    the n-th and the next."""
    s = values.sort(descending=True).values
    if n >= len(s):
        return float(s[-1]) / 2
    return float(s[n - 1] + s[n]) / 2


def magnitudes(effects: NodeEffects, errors: bool) -> torch.Tensor:
    parts = [f.abs().flatten() for f in effects.features]
    if errors:
        parts += [e.abs().flatten() for e in effects.errors]
    values = torch.cat(parts)
    return values[values > 0]


def sweep(ev: Evaluator, effects: NodeEffects, errors: bool, max_nodes: int | None = None, points: int = 24,
          job=None, done: list | None = None) -> list[Point]:
    """Faithfulness and completeness at node counts on a log grid (up to `max_nodes`).
    Points are appended to `done` (when given) as they are computed, so a cancelled
    sweep keeps what it finished."""
    from engine.jobs import as_job

    job = as_job(job)
    values = magnitudes(effects, errors)
    total = len(values) if max_nodes is None else min(len(values), max_nodes)
    grid = count_grid(total, points)
    out = done if done is not None else []
    for k, n in enumerate(grid):
        job.check()
        thr = threshold_for(values, n)
        keep = keep_masks(effects, thr, errors)
        nodes, feats = size(keep, not effects.per_position)
        m_c, _, faith, comp = ev.evaluate(keep, job)
        out.append(Point(thr, nodes, feats, faith, comp, ev.baseline.plain(m_c)))
        job.progress((k + 1) / len(grid), f"sweep {'with' if errors else 'without'} error nodes",
                     step=k + 1, total=len(grid))
    return out


def crossing(points: list[Point], level: float) -> int | None:
    """The smallest circuit (node count) on the curve whose faithfulness reaches `level`."""
    hits = [p.nodes for p in points if p.faithfulness >= level]
    return min(hits) if hits else None
