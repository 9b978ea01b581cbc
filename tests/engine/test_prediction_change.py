"""`tree.ablate`'s prediction change (the Ablation pane's before/after table), over the
real protocol, against sae_lens's own `HookedSAETransformer` with the same SAEs, their
error terms, and the features zeroed by a hook on `hook_sae_acts_post`."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import REPO
from tests.engine.engine_proc import EngineProcess

UP, DOWN = REPO / "weights/saes/resid_mid-topk", REPO / "weights/saes/mlp_out-topk"
PROMPT = "    def __init__(self, name):\n        self."


def _hooked_probs(lm, tokens, features: list[int], position: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token probabilities at `position` (BOS counted) without and with the upstream
    features zeroed at every position after BOS, computed by sae_lens."""
    from sae_lens import SAE, HookedSAETransformer

    model = HookedSAETransformer(lm.model.cfg, tokenizer=lm.tokenizer)
    model.load_state_dict(lm.model.state_dict())
    model.eval()
    saes = [SAE.load_from_disk(str(p)) for p in (UP, DOWN)]
    hook = saes[0].cfg.metadata.hook_name

    def zero(acts, hook):
        acts[:, 1:, features] = 0.0
        return acts

    for sae in saes:
        model.add_sae(sae, use_error_term=True)
    with torch.no_grad():
        before = model(tokens)[0, position].float().softmax(-1)
        with model.hooks(fwd_hooks=[(f"{hook}.hook_sae_acts_post", zero)]):
            after = model(tokens)[0, position].float().softmax(-1)
    return before, after


def test_tree_ablate_reports_the_prediction_before_and_after(default_model):
    engine = EngineProcess()
    try:
        engine.request("load", "model.load")
        assert engine.reply("load", timeout=120)[0]["status"] == "ok"
        engine.request("o", "tree.open", tree="t", upstream=str(UP), downstream=str(DOWN), prompt=PROMPT, top=8)
        opened = engine.reply("o", timeout=120)[0]["result"]
        features = [c["node"]["feature"] for c in opened["root"]["children"] if c["node"]["kind"] == "feature"]
        # the children are the downstream SAE's; ablate upstream features that fire here
        tokens = default_model.model.to_tokens(PROMPT)
        from engine.saes import load_sae

        up = load_sae(UP)
        with torch.no_grad():
            _, cache = default_model.model.run_with_cache(tokens, names_filter=[up.cfg.metadata.hook_name])
            acts = up.encode(cache[up.cfg.metadata.hook_name][0])
        position = opened["position"] + 1  # BOS counted
        firing = acts[position].topk(3).indices.tolist()
        assert features  # the tree opened with feature children
        engine.request("a", "tree.ablate", tree="t", site=0, features=firing)
        reply = engine.reply("a", timeout=120)[0]
        assert reply["status"] == "ok", reply
        change = reply["result"]["prediction"]
    finally:
        engine.close()

    before, after = _hooked_probs(default_model, tokens, firing, position)
    rows = change["rows"]
    assert {r["id"] for r in rows} >= set(before.topk(5).indices.tolist()) | set(after.topk(5).indices.tolist())
    for r in rows:
        assert r["before"] == pytest.approx(float(before[r["id"]]), abs=1e-4)
        assert r["after"] == pytest.approx(float(after[r["id"]]), abs=1e-4)
        assert r["change"] == pytest.approx(r["after"] - r["before"], abs=1e-6)
        assert r["rank_before"] == int((before > before[r["id"]]).sum()) + 1
        assert r["rank_after"] == int((after > after[r["id"]]).sum()) + 1
    assert [r["after"] for r in rows] == sorted((r["after"] for r in rows), reverse=True)
    top_b, top_a = int(before.argmax()), int(after.argmax())
    assert change["top_changed"] == (top_b != top_a)
    assert change["top_before"] == default_model.tokenizer.decode([top_b])
    assert change["top_after"] == default_model.tokenizer.decode([top_a])
    assert any(abs(r["change"]) > 1e-3 for r in rows)  # the ablation did change the prediction
