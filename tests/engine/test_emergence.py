"""Feature emergence: matching against brute force, the formed step against a plain loop,
a real run's curve, the CLI and the `train.emergence` request."""

import itertools
import json

import pytest
import torch

from engine.errors import UserError
from engine.train.emergence import emergence, formed_index, match, unit_rows
from engine.train.snapshots import list_snapshots, load_snapshot
from tests.conftest import run_saescope

HOOK = "blocks.0.hook_mlp_out"


def test_hungarian_matching_equals_brute_force_on_a_small_dictionary():
    g = torch.Generator().manual_seed(4)
    for trial in range(5):
        reference = unit_rows(torch.randn(6, 5, generator=g))
        other = unit_rows(reference + 0.8 * torch.randn(6, 5, generator=g))
        cos = reference @ other.T
        best = max(itertools.permutations(range(6)), key=lambda p: sum(cos[i, p[i]].item() for i in range(6)))
        got = match(reference, other, "hungarian")
        torch.testing.assert_close(got, torch.stack([cos[i, best[i]] for i in range(6)]))
        assert torch.equal(match(reference, other, "greedy"), cos.max(1).values)  # nearest, not one-to-one


def test_the_formed_step_is_the_first_snapshot_from_which_it_stays_above():
    g = torch.Generator().manual_seed(2)
    cos = torch.rand(9, 40, generator=g)
    want = []
    for j in range(40):
        first = 9
        for t in reversed(range(9)):
            if cos[t, j] < 0.6:
                break
            first = t
        want.append(first)
    assert formed_index(cos, 0.6).tolist() == want


@pytest.fixture(scope="module")
def seeds(tmp_path_factory, default_model):
    """Two tiny TopK runs differing only in seed, side by side, with a snapshot every 2 steps."""
    from engine.train.config import TrainConfig
    from engine.train.loop import train

    out = tmp_path_factory.mktemp("emergence")
    cfgs = [TrainConfig(hook=HOOK, arch="topk", d_sae=64, k=8, tokens=256 * 16, batch_size=256, seed=s,
                        checkpoint_every=0, eval_tokens=512, snapshot_every=2) for s in (0, 1)]
    dirs = [out / f"s{s}" for s in (0, 1)]
    train(cfgs, dirs, lm=default_model)
    return dirs


def test_a_runs_curve_against_an_independent_computation(seeds):
    from safetensors.torch import load_file
    from scipy.optimize import linear_sum_assignment

    run = seeds[0]
    result = emergence(run, threshold=0.9)
    snaps = list_snapshots(run)
    assert [p.step for p in result.points] == [s for s, _ in snaps] == list(range(0, 17, 2))
    assert result.reference == "final" and result.method == "hungarian" and result.d_sae == 64
    final = load_file(str(run / "sae_weights.safetensors"))["W_dec"].double()
    final = (final / final.norm(dim=1, keepdim=True)).numpy()
    cosines = []
    for _, path in snaps:
        w = load_snapshot(path)["W_dec"].double().numpy()
        c = final @ w.T
        rows, cols = linear_sum_assignment(-c)
        cosines.append(c[rows, cols])
    formed = []
    for j in range(64):
        step = None
        for (s, _), c in zip(reversed(snaps), reversed(cosines)):
            if c[j] < 0.9:
                break
            step = s
        formed.append(step if step is not None else 16)
    assert result.emergence_step == formed
    for p, c, f in zip(result.points, cosines, formed):
        assert p.mean_cosine == pytest.approx(c.mean(), abs=1e-3)
        assert p.formed == pytest.approx(sum(x <= p.step for x in formed) / 64)
        assert p.tokens == p.step * 256
    assert result.points[-1].formed == 1.0  # the last snapshot is the final decoder
    assert result.points[0].formed < 0.5  # an initial decoder has not formed its features
    assert result.baseline_matched < 0.05 and abs(result.baseline_mean_cosine) < 0.5
    # first firing: the tracker's, against the steps' own records
    assert all(s is None or 0 <= s < 16 for s in result.first_fired_step)
    assert result.density and result.density[-1].step == 16
    assert (run / "emergence.json").exists()  # cached for the feature map


def test_a_run_trained_by_the_sparse_step_loads_in_sae_lens(seeds):
    from sae_lens import SAE, TopKSAE

    sae = SAE.load_from_disk(str(seeds[0]))
    assert isinstance(sae, TopKSAE) and sae.cfg.d_sae == 64 and sae.cfg.metadata.hook_name == HOOK
    x = torch.randn(10, sae.cfg.d_in)
    assert ((sae.encode(x) != 0).sum(-1) <= 8).all()


def test_two_seeds_share_a_fraction_of_their_features(seeds):
    result = emergence(seeds[0], against=seeds[1], shared_threshold=0.7)
    assert [p.step for p in result.shared] == list(range(0, 17, 2))
    assert all(0 <= p.shared <= 1 for p in result.shared)
    same = emergence(seeds[0], against=seeds[0])
    assert all(p.shared == 1.0 for p in same.shared)


def test_the_cli_prints_emergence_and_refuses_a_run_without_snapshots(seeds, tmp_path):
    r = run_saescope("emergence", str(seeds[0].parent), "--json", timeout=120)
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert [l["path"].rsplit("/", 1)[-1] for l in lines] == ["s0", "s1"]
    r = run_saescope("emergence", str(seeds[0]), timeout=120)
    assert r.returncode == 0 and "fraction of features formed" in r.stdout, r.stderr
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "saescope.json").write_text(json.dumps({"hook": HOOK}))
    r = run_saescope("emergence", str(tmp_path / "run"), timeout=60)
    assert r.returncode == 2 and "no decoder snapshots" in r.stderr and "Traceback" not in r.stderr
    with pytest.raises(UserError, match="thresholds"):
        emergence(seeds[0], threshold=1.5)


def test_the_engine_answers_train_emergence(seeds):
    from tests.engine.engine_proc import EngineProcess

    engine = EngineProcess()
    try:
        engine.request("em1", "train.emergence", path=str(seeds[1]), against=str(seeds[0]))
        reply, events = engine.reply("em1", timeout=60)
        assert reply["status"] == "ok", reply
        assert reply["result"]["arch"] == "topk" and len(reply["result"]["shared"]) == 9
        engine.request("em2", "train.emergence", path=str(seeds[1] / "missing"))
        reply, _ = engine.reply("em2")
        assert reply["status"] == "error" and "saescope training run" in reply["error"], reply
    finally:
        engine.close()
