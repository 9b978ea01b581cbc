"""The name, rule and token window of every figure saescope shows; torch-free.

Every figure shown about an SAE (in a table, a pane, a CLI line or a file) is one of
these, computed by `engine.train.metrics` (and, spliced into the model, by
`engine.train.evaluate`) by the rule written here. The names, rules and windows live
in this small module, apart from the torch code, because the TUI must label its
columns and tooltips with them and may not import torch; `metrics.py` imports its
constants from here, so a window changed here changes the computation and every
label at once.

The figures (x: the SAE's input at a token, x_hat: its reconstruction, f: the
feature activations; every figure leaves out the BOS position of each window, which
the SAEs are not trained on):
- dead fraction: the share of features that never fire (f != 0) on any of the first
  `DEAD_TOKENS` held-out tokens of the model's corpus (in the evaluation's windows;
  BOS positions are counted in the window but never looked at). One rule, one
  window, whatever the evaluation's own size: the final evaluation of a training
  run, `saescope eval` and the Inspector all report this number. 131,072 tokens is
  the window the shipped SAEs were evaluated on, so their saved `eval.json` already
  holds it; a feature with a density below about 1/131,072 (7.6e-6) counts as dead.
- quiet fraction: the training-time figure, the share of features that have not
  fired in the last `dead_window` training tokens (a run setting). It moves during
  training, so it is not called "dead".
- firing density: firings / tokens, per feature, over the stated tokens (not a count).
- L0: the number of features with f != 0 at a token, averaged over tokens.
- MSE: mean over tokens and input dimensions of (x - x_hat)^2, in the model's units.
- explained variance: 1 - sum||x - x_hat||^2 / sum||x - mean(x)||^2, the mean taken
  per input dimension over the same tokens (one number for all tokens, not a mean of
  per-token ratios).
- CE loss score: (CE_zero - CE_sae) / (CE_zero - CE_clean), next-token cross-entropy
  averaged over every predicted token, with the SAE's reconstruction (or zeros)
  replacing the hook's activation at every position but BOS.
- KL score: (KL_zero - KL_sae) / KL_zero, with KL(clean || patched) of the
  next-token distributions averaged over the same tokens.
"""

from __future__ import annotations

DEAD_TOKENS = 131_072
"""Held-out tokens over which "dead" (never fired) is measured."""

DENSITY_THRESHOLD = 1e-5
"""Below this firing density (over the last full sampling window) a feature counts in
the training-time "rare" fraction (the `dead_fraction_density` record field)."""


def tokens_short(n: int) -> str:
    """`131k`, `1M`, `512`: a token count for a label."""
    for div, suffix in ((1 << 20, "M"), (1 << 10, "k")):
        if n >= div and n % div == 0:
            return f"{n // div}{suffix}"
    if n >= 1000:
        return f"{n / 1000:.0f}k"
    return str(n)


# (record key, short header, long name, rule). Record keys are those of the engine's
# records and `eval.json` (kept for the files already written).
FIGURES: dict[str, tuple[str, str, str]] = {
    "dead_fraction": ("dead", "dead fraction",
                      f"features that never fire on the first {DEAD_TOKENS:,} held-out tokens"),
    "dead_fraction_window": ("quiet", "quiet fraction",
                             "features not fired within the last `dead_window` training tokens (live, "
                             "training-time; not the dead fraction)"),
    "dead_fraction_density": ("rare", "rare fraction",
                              f"features with a firing density below {DENSITY_THRESHOLD:g} over the last "
                              "full training window"),
    "density": ("density", "firing density", "firings / tokens of one feature"),
    "l0": ("L0", "L0", "features firing per token, averaged over tokens"),
    "l1": ("L1", "L1", "sum of |feature activations| per token, averaged over tokens"),
    "mse": ("MSE", "mean squared error", "mean over tokens and dimensions of (x - x_hat)^2"),
    "explained_variance": ("EV", "explained variance",
                           "1 - sum|x - x_hat|^2 / sum|x - mean(x)|^2 over all tokens"),
    "ce_loss_score": ("CE score", "CE loss score",
                      "(CE zero-ablated - CE with SAE) / (CE zero-ablated - CE clean)"),
    "kl_div_score": ("KL score", "KL divergence score",
                     "(KL zero-ablated - KL with SAE) / KL zero-ablated, KL(clean || patched)"),
    "ce_loss_with_sae": ("CE w/ SAE", "CE loss with the SAE", "next-token cross-entropy with the SAE spliced in"),
}


def header(key: str) -> str:
    return FIGURES[key][0]


def rule(key: str) -> str:
    """`name: rule`, for a tooltip or a help line."""
    _, name, text = FIGURES[key]
    return f"{name}: {text}"


def full_dead_window(dead_tokens: int, n_ctx: int | None = None) -> bool:
    """Whether a dead fraction was measured on the rule's whole window: the first
    `DEAD_TOKENS // n_ctx` windows (`DEAD_TOKENS` itself when the context divides it)."""
    if n_ctx:
        return dead_tokens == max(1, DEAD_TOKENS // n_ctx) * n_ctx
    return dead_tokens == DEAD_TOKENS


def dead_label(dead_tokens: int | None, n_ctx: int | None = None) -> str:
    """How a dead fraction is labelled: plain `dead` when measured over the rule's
    `DEAD_TOKENS` held-out tokens, else with the window it was measured on."""
    if dead_tokens is None or full_dead_window(dead_tokens, n_ctx):
        return "dead"
    return f"dead in {tokens_short(dead_tokens)} tok"


def dead_tokens_of(result: dict) -> int | None:
    """The window of a saved evaluation's dead fraction: `dead_tokens`, or for the
    files written before it was recorded, the evaluation's `tokens`."""
    n = result.get("dead_tokens", result.get("tokens"))
    return int(n) if isinstance(n, (int, float)) else None


def tokens_formed(points, fraction: float = 0.5) -> int | None:
    """Emergence: the training tokens at the first decoder snapshot by which `fraction`
    of the features had formed (an `EmergencePoint` of `engine.train.emergence`, not
    interpolated); None when no snapshot reached it."""
    return next((p.tokens for p in points if p.formed >= fraction), None)
