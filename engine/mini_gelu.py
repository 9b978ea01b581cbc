"""The default model's own architecture, and its exact conversion to TransformerLens.

`MiniGelu` is a plain PyTorch 1-layer GELU transformer (pre-LayerNorm, learned
positions, untied unembedding): the shape of the reference work's gelu-1l, sized
for a CPU. It is trained by `engine.recipes.mini_gelu` and shipped as safetensors.

Notes
- Training uses this module, not HookedTransformer, because fused attention
  (`scaled_dot_product_attention`) and no hook points make it several times faster.
- `to_transformer_lens_state_dict` maps the weights onto TransformerLens names with
  no folding or centring, so every hook activation is the trained model's own; a
  test checks that the logits agree.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MiniGeluConfig:
    """Shape of the model; saved as `config.json` beside the weights."""

    d_vocab: int = 4096
    d_model: int = 256
    d_mlp: int = 1024
    n_heads: int = 4
    n_ctx: int = 128
    n_layers: int = 1
    eps: float = 1e-5

    @property
    def d_head(self) -> int:
        return self.d_model // self.n_heads

    def to_dict(self) -> dict:
        return asdict(self)


class Block(nn.Module):
    def __init__(self, cfg: MiniGeluConfig):
        super().__init__()
        self.cfg = cfg
        self.ln1 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.qkv = nn.Linear(cfg.d_model, 3 * cfg.d_model)
        self.out = nn.Linear(cfg.d_model, cfg.d_model)
        self.ln2 = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.fc_in = nn.Linear(cfg.d_model, cfg.d_mlp)
        self.fc_out = nn.Linear(cfg.d_mlp, cfg.d_model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        h, dh = self.cfg.n_heads, self.cfg.d_head
        q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
        q, k, v = (z.view(b, t, h, dh).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.out(att.transpose(1, 2).reshape(b, t, d))
        return x + self.fc_out(F.gelu(self.fc_in(self.ln2(x))))


class MiniGelu(nn.Module):
    def __init__(self, cfg: MiniGeluConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.d_vocab, cfg.d_model)
        self.pos = nn.Embedding(cfg.n_ctx, cfg.d_model)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model, eps=cfg.eps)
        self.unembed = nn.Linear(cfg.d_model, cfg.d_vocab)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens) + self.pos(torch.arange(tokens.shape[1], device=tokens.device))
        for block in self.blocks:
            x = block(x)
        return self.unembed(self.ln_f(x))


def transformer_lens_config_dict(cfg: MiniGeluConfig) -> dict:
    """Keyword arguments for `HookedTransformerConfig` describing the same model."""
    return dict(
        n_layers=cfg.n_layers, d_model=cfg.d_model, d_head=cfg.d_head, n_heads=cfg.n_heads,
        d_mlp=cfg.d_mlp, d_vocab=cfg.d_vocab, n_ctx=cfg.n_ctx, act_fn="gelu",
        normalization_type="LN", positional_embedding_type="standard", eps=cfg.eps,
        original_architecture="mini-gelu-1l", default_prepend_bos=True,
    )


def to_transformer_lens_state_dict(sd: dict[str, torch.Tensor], cfg: MiniGeluConfig) -> dict:
    """Rename and reshape `MiniGelu` weights into a HookedTransformer state dict."""
    d, h, dh = cfg.d_model, cfg.n_heads, cfg.d_head
    out = {
        "embed.W_E": sd["embed.weight"],
        "pos_embed.W_pos": sd["pos.weight"],
        "ln_final.w": sd["ln_f.weight"],
        "ln_final.b": sd["ln_f.bias"],
        "unembed.W_U": sd["unembed.weight"].T,
        "unembed.b_U": sd["unembed.bias"],
    }
    for layer in range(cfg.n_layers):
        p, q = f"blocks.{layer}.", f"blocks.{layer}."
        w_qkv, b_qkv = sd[p + "qkv.weight"], sd[p + "qkv.bias"]
        for i, name in enumerate("QKV"):
            w = w_qkv[i * d:(i + 1) * d]  # [out, in]
            out[q + f"attn.W_{name}"] = w.T.reshape(d, h, dh).permute(1, 0, 2)
            out[q + f"attn.b_{name}"] = b_qkv[i * d:(i + 1) * d].reshape(h, dh)
        out[q + "attn.W_O"] = sd[p + "out.weight"].T.reshape(h, dh, d)
        out[q + "attn.b_O"] = sd[p + "out.bias"]
        for ln_ours, ln_tl in (("ln1", "ln1"), ("ln2", "ln2")):
            out[q + f"{ln_tl}.w"] = sd[p + f"{ln_ours}.weight"]
            out[q + f"{ln_tl}.b"] = sd[p + f"{ln_ours}.bias"]
        out[q + "mlp.W_in"] = sd[p + "fc_in.weight"].T
        out[q + "mlp.b_in"] = sd[p + "fc_in.bias"]
        out[q + "mlp.W_out"] = sd[p + "fc_out.weight"].T
        out[q + "mlp.b_out"] = sd[p + "fc_out.bias"]
    return {k: v.contiguous() for k, v in out.items()}
