"""What one SAE training run is: a struct saved as `saescope.json` in its folder.

The sae_lens training config is derived from it (`sae_lens_config`), so the
saved run folder is the single source of truth for `--resume`.
"""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from engine.errors import UserError
from engine.protocol import TRAIN_ARCHITECTURES, TrainSettings

ARCHITECTURES = TRAIN_ARCHITECTURES
RUN_CONFIG = "saescope.json"


class TrainConfig(TrainSettings, frozen=True, kw_only=True):
    """`engine.protocol.TrainSettings` (the fields and their defaults, defined once)
    plus validation and the run folder's file. Change with `msgspec.structs.replace`."""

    def validate(self, d_in: int | None = None) -> None:
        if self.arch not in ARCHITECTURES:
            raise UserError(f"unknown architecture {self.arch!r}: use {', '.join(ARCHITECTURES)}")
        if not 1 <= self.d_sae <= 1 << 20:
            raise UserError(f"--d-sae must be between 1 and {1 << 20}, got {self.d_sae}")
        if self.arch in ("topk", "batchtopk", "jumprelu") and not 1 <= self.k <= self.d_sae:
            raise UserError(f"--k must be between 1 and d_sae ({self.d_sae}), got {self.k}")
        if self.tokens < self.batch_size:
            raise UserError(f"--tokens ({self.tokens}) must be at least one batch ({self.batch_size})")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.context < 0 or self.context == 1:
            raise UserError(f"--context must be at least 2 tokens (or 0 for the default), got {self.context}")
        if self.snapshot_every < -1:
            raise UserError(f"--snapshot-every must be -1 (none), 0 (automatic) or a number of steps, got {self.snapshot_every}")
        if self.threshold_init <= 0:
            raise UserError(f"--threshold-init must be positive, got {self.threshold_init}")
        if self.l1 < 0 or self.lr <= 0:
            raise UserError("--l1 must be >= 0 and --lr > 0")

    def as_dict(self) -> dict:
        return msgspec.structs.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2) + "\n"

    def settings(self) -> TrainSettings:
        """The plain protocol struct (what a reply carries)."""
        return TrainSettings(**self.as_dict())

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        known = set(cls.__struct_fields__)
        unknown = set(data) - known
        if unknown:
            raise UserError(f"unknown training settings: {', '.join(sorted(unknown))}")
        if "hook" not in data:
            raise UserError("bad training settings: a hook is required")
        try:
            return msgspec.convert(data, cls, strict=False)
        except msgspec.ValidationError as e:
            raise UserError(f"bad training settings: {e}") from None

    @classmethod
    def load(cls, run_dir: Path) -> "TrainConfig":
        path = Path(run_dir) / RUN_CONFIG
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except FileNotFoundError:
            raise UserError(f"{run_dir} is not a saescope training run (no {RUN_CONFIG})") from None
        except NotADirectoryError:
            raise UserError(f"{run_dir} is not a saescope training run (not a folder)") from None
        except json.JSONDecodeError as e:
            raise UserError(f"{path} is not valid JSON ({e})") from None


def run_folders(path: Path) -> list[Path]:
    """The run folders at `path`: itself when it holds a run, else its sub-folders that
    do (runs trained side by side: `--out X --arch a --arch b` writes `X/a`, `X/b`),
    sorted by name. UserError when there is none."""
    path = Path(path)
    if (path / RUN_CONFIG).is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path} {'is not a folder' if path.exists() else 'does not exist'}")
    runs = sorted(child for child in path.iterdir() if (child / RUN_CONFIG).is_file())
    if not runs:
        raise UserError(f"{path} holds no training run (no {RUN_CONFIG} in it or in its sub-folders)")
    return runs


def sae_lens_config(cfg: TrainConfig, d_in: int, model_name: str, n_ctx: int, device: str = "cpu"):
    """The sae_lens training-SAE config for this run."""
    from sae_lens import (BatchTopKTrainingSAEConfig, JumpReLUTrainingSAEConfig,
                          StandardTrainingSAEConfig, TopKTrainingSAEConfig)
    from sae_lens.saes.sae import SAEMetadata

    common = dict(d_in=d_in, d_sae=cfg.d_sae, dtype="float32", device=device,
                  normalize_activations="expected_average_only_in",
                  metadata=SAEMetadata(model_name=model_name, hook_name=cfg.hook,
                                       context_size=n_ctx, prepend_bos=True))
    if cfg.arch == "relu":
        return StandardTrainingSAEConfig(l1_coefficient=cfg.l1, l1_warm_up_steps=cfg.steps // 20, **common)
    if cfg.arch == "jumprelu":
        # Gemma Scope 2's quadratic penalty around a target L0: no coefficient sweep needed
        # to land near `k` active features.
        return JumpReLUTrainingSAEConfig(l0_coefficient=cfg.l1, l0_warm_up_steps=cfg.steps // 20,
                                         jumprelu_sparsity_loss_mode="quadratic", target_l0=cfg.k,
                                         jumprelu_init_threshold=cfg.threshold_init, **common)
    if cfg.arch == "topk":
        return TopKTrainingSAEConfig(k=cfg.k, **common)
    return BatchTopKTrainingSAEConfig(k=cfg.k, **common)


def trainer_config(cfg: TrainConfig, device: str = "cpu"):
    from sae_lens.config import SAETrainerConfig

    steps = cfg.steps
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_size, train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr, lr_end=cfg.lr / 10, lr_scheduler_name="constant",
        lr_warm_up_steps=int(steps * cfg.warmup_fraction), lr_decay_steps=int(steps * cfg.decay_fraction),
        device=device, dead_feature_window=max(1, cfg.dead_window // cfg.batch_size),
        feature_sampling_window=max(1, cfg.dead_window // cfg.batch_size),
    )
