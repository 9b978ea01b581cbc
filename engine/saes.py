"""Loading SAEs in sae_lens's own format and checking they fit the loaded model.

Notes
- Any folder that `sae_lens.SAE.load_from_disk` reads works (our runs save that
  format); failures become one-line `UserError`s.
- Fit is checked by running the model on two tokens and comparing the hook's
  width with the SAE's `d_in`, so every hook kind (resid, mlp, attention) is covered.
"""

from __future__ import annotations

from pathlib import Path

from engine.errors import UserError


def load_sae(path: str | Path, device: str = "cpu"):
    from sae_lens import SAE

    path = Path(path).expanduser()
    if not (path / "cfg.json").exists() or not (path / "sae_weights.safetensors").exists():
        raise UserError(f"{path} is not an SAE folder (needs cfg.json and sae_weights.safetensors)")
    try:
        sae = SAE.load_from_disk(str(path), device=device)
    except Exception as e:  # sae_lens raises many types for a bad folder
        raise UserError(f"cannot load the SAE in {path}: {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    sae.eval()
    return sae


def hook_width(lm, hook: str) -> int:
    """The last dimension of `hook`'s activation in the loaded model."""
    import torch

    if hook not in lm.model.hook_dict:
        near = [h for h in lm.model.hook_dict if h.split(".")[-1] == hook.split(".")[-1]][:4]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise UserError(f"hook {hook!r} does not exist in {lm.name}{hint}")
    bos = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else 0
    with torch.no_grad():
        _, cache = lm.run_with_cache(torch.tensor([[bos, bos]]), names_filter=[hook])
    return int(cache[hook].shape[-1])


def check_fits(sae, lm) -> str:
    """The SAE's hook, after checking it exists in `lm` with the SAE's input width."""
    hook = sae.cfg.metadata.hook_name
    if not hook:
        raise UserError("the SAE's cfg.json names no hook (metadata.hook_name)")
    width = hook_width(lm, hook)
    if width != sae.cfg.d_in:
        raise UserError(f"the SAE reads {sae.cfg.d_in}-wide activations but {hook} in {lm.name} is {width} wide")
    return hook


def model_spec_for(sae) -> str:
    """Which model an SAE was trained on, as a spec `load_model` takes."""
    name = sae.cfg.metadata.model_name or "default"
    return "default" if name == "mini-gelu-1l" else name
