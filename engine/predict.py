"""Next-token prediction: the first analysis, shared by the CLI, the server and the TUI.

The probabilities are a softmax over the final position's logits in float32, so
they do not depend on the model's dtype.
"""

from __future__ import annotations

from engine.errors import UserError

MAX_TOP = 1000


def prompt_tokens(lm, text: str):
    """Tokenize a prompt (BOS prepended) and check it fits the model's context."""
    if not text or not text.strip():
        raise UserError("the prompt is empty")
    tokens = lm.model.to_tokens(text, truncate=False)
    if tokens.shape[1] > lm.model.cfg.n_ctx:
        raise UserError(f"the prompt is {tokens.shape[1]} tokens long; "
                        f"{lm.name} takes at most {lm.model.cfg.n_ctx}")
    return tokens


def predict(lm, text: str, top: int = 10) -> dict:
    """The model's next-token distribution after `text`: the top `top` tokens."""
    import torch

    if not 1 <= top <= MAX_TOP:
        raise UserError(f"--top must be between 1 and {MAX_TOP}, got {top}")
    tokens = prompt_tokens(lm, text)
    with torch.inference_mode():
        logits = lm(tokens)[0, -1].float()
    probs = logits.softmax(-1)
    values, ids = probs.topk(min(top, probs.shape[0]))
    to_str = lm.tokenizer.convert_ids_to_tokens
    decode = lambda i: lm.tokenizer.decode([i])
    return {
        "model": lm.name,
        "tokens": lm.model.to_str_tokens(tokens[0]),
        "top": [{"token": decode(i), "id": i, "prob": p, "raw": to_str(i)}
                for i, p in zip(ids.tolist(), values.tolist())],
        "entropy": float(-(probs * probs.clamp_min(1e-30).log()).sum()),
    }
