"""The shipped SmolLM2-135M SAEs: they load, fit, carry their evaluations and indexes,
and `saescope ablate` across two layers equals sae_lens's `HookedSAETransformer`."""

from __future__ import annotations

import json

import pytest
import torch

from engine.models import smollm2_gguf
from engine.paths import WEIGHTS_DIR
from tests.conftest import TEST_DEVICE, run_saescope

SAES = {layer: WEIGHTS_DIR / "saes" / f"smollm2-resid_post-l{layer}" for layer in (3, 7, 11, 15)}
PROMPT = "The capital of France is"

pytestmark = [
    pytest.mark.skipif(smollm2_gguf() is None, reason="the smollm2 extra is not installed (see the README)"),
    pytest.mark.skipif(not all(d.exists() for d in SAES.values()),
                       reason="SmolLM2 SAEs missing: run `saescope recipe smollm2-saes`"),
]


@pytest.fixture(scope="module")
def smollm2():
    from engine.models import load_model

    return load_model("smollm2-135m", device=TEST_DEVICE)


def test_shipped_saes_fit_the_model_and_carry_eval_and_index(smollm2):
    from engine.inspect import SaeView

    for layer, folder in SAES.items():
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        assert size < 10 * 2**20, f"{folder} is {size / 2**20:.1f} MB"
        view = SaeView(smollm2, folder)
        assert view.hook == f"blocks.{layer}.hook_resid_post"
        assert view.index is not None, "the shipped index must match the SmolLM2-tokenized corpus"
        ev = json.loads((folder / "eval.json").read_text())
        assert ev["hook"] == view.hook and 0 < ev["explained_variance"] <= 1 and ev["l0"] > 0
        # top examples are SmolLM2 tokens of the corpus: the window text decodes to real words
        page = view.feature_page(int(view.index.fire_count.argmax()), top=2)
        text = "".join(page["examples"][0]["tokens"])
        assert sum(c.isalpha() for c in text) > len(text) / 3


def _independent(lm, tokens, up_dir, down_dir, features, position):
    """Zero-ablate `features` of the upstream SAE at every prompt position (after BOS) in
    sae_lens's HookedSAETransformer with both SAEs and their error terms; the change
    of the downstream features and of the logits at `position`."""
    from sae_lens import HookedSAETransformer, SAE

    model = HookedSAETransformer(lm.model.cfg, tokenizer=lm.tokenizer)
    model.load_state_dict(lm.model.state_dict(), strict=False)
    model.eval()
    up, down = (SAE.load_from_disk(str(d), device=lm.device) for d in (up_dir, down_dir))
    up_hook = f"{up.cfg.metadata.hook_name}.hook_sae_acts_post"
    down_hook = f"{down.cfg.metadata.hook_name}.hook_sae_acts_post"

    def zero(acts, hook):
        acts[:, 1:, features] = 0
        return acts

    with torch.no_grad():
        clean_logits, clean = model.run_with_cache_with_saes(tokens, saes=[up, down], use_error_term=True,
                                                             names_filter=[down_hook])
        model.add_sae(up, use_error_term=True)
        model.add_sae(down, use_error_term=True)
        model.add_hook(up_hook, zero)
        try:
            logits, cache = model.run_with_cache(tokens, names_filter=[down_hook])
        finally:
            model.reset_hooks()
            model.reset_saes()
    d_feat = cache[down_hook][0, position] - clean[down_hook][0, position]
    d_logit = logits[0, position] - clean_logits[0, position]
    return d_feat, d_logit


def test_cli_ablate_across_layers_equals_hooked_sae_transformer(smollm2):
    from engine.predict import prompt_tokens
    from engine.saes import load_sae

    up_dir, down_dir = SAES[3], SAES[7]
    tokens = prompt_tokens(smollm2, PROMPT)
    up = load_sae(up_dir, device=smollm2.device)
    with torch.no_grad():
        _, cache = smollm2.run_with_cache(tokens, names_filter=[up.cfg.metadata.hook_name])
        acts = up.encode(cache[up.cfg.metadata.hook_name][0])
    position = tokens.shape[1] - 1
    features = acts[position].topk(2).indices.tolist()
    args = ["ablate", "--upstream", str(up_dir), "--downstream", str(down_dir), "--prompt", PROMPT,
            "--method", "exact", "--depth", "1", "--top", "6", "--json"]
    for f in features:
        args += ["--feature", str(f)]
    r = run_saescope(*args, timeout=300)
    assert r.returncode == 0, r.stderr
    tree = json.loads(r.stdout)["tree"]
    d_feat, d_logit = _independent(smollm2, tokens, up_dir, down_dir, features, position)
    feats = [c for c in tree["children"] if c["node"]["kind"] == "feature"]
    logits = [c for c in tree["children"] if c["node"]["kind"] == "logit"]
    assert feats and logits
    for c in feats:
        assert c["effect"] == pytest.approx(float(d_feat[c["node"]["feature"]]), abs=2e-3, rel=2e-3)
    for c in logits:
        assert c["effect"] == pytest.approx(float(d_logit[c["node"]["token_id"]]), abs=2e-3, rel=2e-3)
    # the tree shows the largest changes: nothing the independent run changes more is left out
    assert max(abs(c["effect"]) for c in feats) == pytest.approx(float(d_feat.abs().max()), rel=2e-3)
