"""The fast TopK / BatchTopK step against sae_lens's own `SAETrainer.step`: the same
losses, the same updated weights, optimiser state and firing statistics after several
steps, with and without dead latents (the auxiliary loss)."""

import copy

import pytest
import torch

from engine.train.config import TrainConfig, trainer_config
from engine.train.metrics import Codes
from engine.train.sparse_step import SparseStep

D_IN, D_SAE, K, BATCH = 48, 192, 6, 96


def _pair(arch: str):
    from sae_lens.training.sae_trainer import SAETrainer

    from engine.train.loop import _training_sae

    cfg = TrainConfig(hook="blocks.0.hook_mlp_out", arch=arch, d_sae=D_SAE, k=K, tokens=BATCH * 40,
                      batch_size=BATCH, dead_window=BATCH * 3)
    sae = _training_sae(cfg, D_IN, "tiny", 16, "cpu")
    reference = SAETrainer(trainer_config(cfg), sae, data_provider=iter(()))
    reference.activation_scaler.scaling_factor = 1.7
    fast = copy.deepcopy(reference)
    return reference, fast


@pytest.mark.parametrize("arch", ["topk", "batchtopk"])
def test_the_fast_step_equals_sae_lens_step(arch):
    reference, fast = _pair(arch)
    step = SparseStep(fast)
    g = torch.Generator().manual_seed(7)
    aux_seen = False
    for i in range(10):
        x = torch.randn(BATCH, D_IN, generator=g) * torch.linspace(0.2, 3, D_IN) + 0.5
        if i == 4:  # many latents dead from here: the auxiliary loss takes part
            for t in (reference, fast):
                t.n_forward_passes_since_fired[: D_SAE // 2] = 10_000
        want = reference.step(x)
        reference.n_training_steps += 1
        got = step(x)
        fast.n_training_steps += 1
        assert got.loss.item() == pytest.approx(want.loss.item(), rel=1e-5)
        for name, value in want.losses.items():
            assert got.losses[name].item() == pytest.approx(value.item(), rel=1e-5, abs=1e-6), name
        aux_seen |= want.losses["auxiliary_reconstruction_loss"].item() > 0
        torch.testing.assert_close(got.sae_out, want.sae_out, rtol=1e-4, atol=1e-5)
        assert torch.equal(got.codes.dense() != 0, want.feature_acts != 0)
        torch.testing.assert_close(got.codes.dense(), want.feature_acts, rtol=1e-4, atol=1e-6)
    assert aux_seen
    for (name, p), q in zip(reference.sae.named_parameters(), fast.sae.parameters()):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-7, msg=name)
    for p, q in zip(reference.optimizer.state.values(), fast.optimizer.state.values()):
        for key in p:
            torch.testing.assert_close(q[key], p[key], rtol=1e-3, atol=1e-9)
    assert torch.equal(reference.n_forward_passes_since_fired, fast.n_forward_passes_since_fired)
    assert torch.equal(reference.act_freq_scores, fast.act_freq_scores)
    assert reference.n_training_samples == fast.n_training_samples
    assert reference.lr_scheduler.get_last_lr() == fast.lr_scheduler.get_last_lr()
    if arch == "batchtopk":
        assert fast.sae.topk_threshold.item() == pytest.approx(reference.sae.topk_threshold.item(), rel=1e-6)


def test_the_fast_step_is_chosen_only_where_it_applies():
    reference, _ = _pair("topk")
    assert SparseStep.supports(reference.sae, reference)
    reference.sae.cfg.rescale_acts_by_decoder_norm = False
    assert not SparseStep.supports(reference.sae, reference)
    relu, _ = _pair("relu")
    assert not SparseStep.supports(relu.sae, relu)


def test_codes_agree_with_the_dense_activations():
    g = torch.Generator().manual_seed(1)
    acts = torch.relu(torch.randn(30, 12, generator=g) - 0.8)
    codes = Codes.from_dense(acts)
    assert torch.equal(codes.dense(), acts)
    assert codes.counts().tolist() == [(acts[:, j] != 0).sum().item() for j in range(12)]
    last = [max((i for i in range(30) if acts[i, j] != 0), default=-1) for j in range(12)]
    assert codes.last_row().tolist() == last
    assert codes.l0() == pytest.approx((acts != 0).sum().item() / 30)
