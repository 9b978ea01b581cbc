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


def prediction_change(before, after, decode, top: int = 5) -> dict:
    """How ablations changed a prediction: the top `top` tokens before and the top `top`
    after (their union, ordered by the probability after, then before), each with its
    probability and rank before and after (softmax over float32 logits `before`/`after`,
    [V] each); `top_changed` when the most likely token is another one."""
    pb, pa = before.float().softmax(-1), after.float().softmax(-1)
    top = min(top, pb.shape[0])
    first_b, first_a = pb.topk(top).indices.tolist(), pa.topk(top).indices.tolist()
    ids = list(dict.fromkeys(first_a + first_b))
    rank_b = {t: int((pb > pb[t]).sum()) + 1 for t in ids}
    rank_a = {t: int((pa > pa[t]).sum()) + 1 for t in ids}
    ids.sort(key=lambda t: (-float(pa[t]), -float(pb[t])))
    return {"rows": [{"token": decode(t), "id": t, "before": float(pb[t]), "after": float(pa[t]),
                      "change": float(pa[t] - pb[t]), "rank_before": rank_b[t], "rank_after": rank_a[t]}
                     for t in ids],
            "top_before": decode(first_b[0]), "top_after": decode(first_a[0]),
            "top_changed": first_b[0] != first_a[0]}
