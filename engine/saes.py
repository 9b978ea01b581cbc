"""Loading SAEs (local folders or SAELens releases) and checking they fit the model.

Specs `load_sae` takes:
- a folder in sae_lens's own format (our runs save that format);
- `release:RELEASE/SAE_ID`, a pretrained SAE from SAELens's directory
  (pretrained_saes.yaml), fetched from the Hugging Face hub on first use;
- `RELEASE/SAE_ID` when that is not an existing path and RELEASE is a known release.

Notes
- Failures become one-line `UserError`s; an unknown release or SAE id lists close
  names, checked before any download.
- Fit is checked by running the model on two tokens and comparing the hook's
  width with the SAE's `d_in`, so every hook kind (resid, mlp, attention) is covered;
  `hook_z` SAEs read the heads flattened (n_heads * d_head), as sae_lens does.
- Reading the release directory parses a large YAML file (seconds), so it is only
  read for specs that are not local folders.
"""

from __future__ import annotations

import difflib
from pathlib import Path

from engine.errors import UserError
from engine.protocol import SAE_RELEASE_PREFIX

RELEASE_PREFIX = SAE_RELEASE_PREFIX
SMOLLM2_NAMES = ("smollm2-135m", "smollm2-135m-instruct", "huggingfacetb/smollm2-135m-instruct")


def load_sae(spec: str | Path, device: str = "cpu"):
    """The SAE `spec` names (a folder or a release, see above), on `device`, in eval mode."""
    release = release_spec(spec)
    sae = _load_release(*release, device) if release else _load_folder(Path(spec).expanduser(), device)
    sae.eval()
    return sae


def _load_folder(path: Path, device: str):
    from sae_lens import SAE

    if not (path / "cfg.json").exists() or not (path / "sae_weights.safetensors").exists():
        where = "" if path.is_absolute() else f" (a relative path, read from the engine's folder {Path.cwd()})"
        raise UserError(f"{path} is not an SAE folder{where} (needs cfg.json and sae_weights.safetensors); "
                        f"for a pretrained SAE write {RELEASE_PREFIX}RELEASE/SAE_ID")
    try:
        return SAE.load_from_disk(str(path), device=device)
    except Exception as e:  # sae_lens raises many types for a bad folder
        raise UserError(f"cannot load the SAE in {path}: {_first_line(e)}") from None


def encoder_input(sae, x):
    """`x` [N, ...] as the SAE's `encode` takes it: a hook_z SAE with sae_lens's hook_z
    reshaping flattens the heads itself (and fails on flat input), others get [N, d_in]."""
    return x if getattr(sae, "hook_z_reshaping_mode", False) else x.reshape(x.shape[0], -1)


def sae_folder(spec: str | Path) -> Path:
    """The folder that holds the SAE `spec`: itself for a local folder; for a release, a
    copy under `cache_dir()/saes/` (made once), so that its index can live beside it."""
    import os
    import re
    import tempfile

    from engine.paths import cache_dir

    release = release_spec(spec)
    if release is None:
        return Path(spec).expanduser()
    folder = cache_dir() / "saes" / release[0] / re.sub(r"[^\w.-]+", "__", release[1])
    if not (folder / "cfg.json").exists():
        sae = load_sae(spec)
        folder.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder.parent, prefix=".tmp.") as tmp:
            sae.save_model(tmp)
            os.replace(tmp, folder)  # whole, or not at all
            os.mkdir(tmp)  # for the context manager's clean-up
    return folder


def release_spec(spec: str | Path) -> tuple[str, str] | None:
    """(release, sae_id) when `spec` names a pretrained SAE, None for a local path."""
    text = str(spec)
    explicit = text.startswith(RELEASE_PREFIX)
    if explicit:
        text = text[len(RELEASE_PREFIX):]
    elif "/" not in text or Path(text).expanduser().exists():
        return None
    directory = _release_directory()
    # Release names have no "/" today, SAE ids often do (layer_0/width_16k/...): take
    # the longest known release prefix, else split at the first "/".
    known = [r for r in directory if text.startswith(r + "/")]
    if known:
        release = max(known, key=len)
        sae_id = text[len(release) + 1:]
    else:
        release, _, sae_id = text.partition("/")
    if release not in directory:
        if not explicit:
            return None  # an ordinary missing path: the folder loader says so
        raise UserError(f"unknown SAELens release {release!r}{_close(release, directory)}")
    if not sae_id:
        raise UserError(f"{RELEASE_PREFIX}{release} names no SAE: write {RELEASE_PREFIX}{release}/SAE_ID"
                        f"{_close('', directory[release].saes_map)}")
    if sae_id not in directory[release].saes_map:
        raise UserError(f"release {release!r} has no SAE {sae_id!r}{_close(sae_id, directory[release].saes_map)}")
    return release, sae_id


def _release_directory() -> dict:
    try:
        from sae_lens.loading.pretrained_saes_directory import get_pretrained_saes_directory
    except ImportError:  # moved in another sae_lens version
        from sae_lens.toolkit.pretrained_saes_directory import get_pretrained_saes_directory
    return get_pretrained_saes_directory()


def _close(name: str, names) -> str:
    names = list(names)
    near = difflib.get_close_matches(name, names, n=4, cutoff=0.4) or names[:4]
    return f" (e.g. {', '.join(near)})" if near else ""


def _load_release(release: str, sae_id: str, device: str):
    from sae_lens import SAE

    from engine.models import hub_offline

    try:
        return SAE.from_pretrained(release, sae_id, device=device)
    except Exception as e:  # the hub's failures come in many types
        text = str(e).lower()
        if hub_offline() or any(w in text for w in ("offline", "connect", "resolve", "network", "timed out")):
            raise UserError(f"SAE {release}/{sae_id} must be downloaded from the Hugging Face hub, which "
                            "cannot be reached here; download it where there is network (it is then "
                            "cached) or pass a local SAE folder") from None
        raise UserError(f"SAE {release}/{sae_id} could not be loaded: {_first_line(e)}") from None


def _first_line(e: Exception) -> str:
    return str(e).splitlines()[0] if str(e).strip() else type(e).__name__


def model_spec_for(sae) -> str:
    """Which model an SAE was trained on, as a spec `load_model` takes."""
    return _spec_for_name(sae.cfg.metadata.model_name)


def _spec_for_name(name: str | None) -> str:
    from engine.models import SMOLLM2

    if not name or name.lower() in ("default", "mini-gelu-1l"):
        return "default"
    if name.lower() in SMOLLM2_NAMES:
        return SMOLLM2
    return name  # a TransformerLens name or a path


def _model_identity(name: str | None) -> str | None:
    """One name per model (aliases and paths resolved), or None when unknown."""
    spec = _spec_for_name(name)
    if spec in ("default", "smollm2-135m"):
        return spec
    if Path(spec).expanduser().is_dir():
        from engine.paths import DEFAULT_MODEL_DIR

        folder = Path(spec).expanduser().resolve()
        return "default" if folder == DEFAULT_MODEL_DIR.resolve() else str(folder)
    try:  # TransformerLens aliases, e.g. gpt2-small and gpt2: a table lookup, no network
        from transformer_lens.loading_from_pretrained import get_official_model_name

        return get_official_model_name(spec)
    except (ImportError, ValueError):
        return None


def hook_width(lm, hook: str) -> int:
    """The width of `hook`'s activation per token: the last dimension, or
    n_heads * d_head for `hook_z` (sae_lens flattens its heads)."""
    import torch

    _check_hook(lm, hook)
    bos = lm.tokenizer.bos_token_id if lm.tokenizer.bos_token_id is not None else 0
    with torch.no_grad():
        _, cache = lm.run_with_cache(torch.tensor([[bos, bos]]), names_filter=[hook])
    shape = cache[hook].shape
    return int(shape[-2] * shape[-1]) if hook.endswith("hook_z") and len(shape) == 4 else int(shape[-1])


def _check_hook(lm, hook: str, who: str = "hook") -> None:
    if hook not in lm.model.hook_dict:
        near = [h for h in lm.model.hook_dict if h.split(".")[-1] == hook.split(".")[-1]][:4]
        hint = f" (did you mean {', '.join(near)}?)" if near else ""
        raise UserError(f"{who} {hook!r} does not exist in {lm.name}{hint}")


def check_fits(sae, lm) -> str:
    """The SAE's hook, after checking the SAE was made for `lm`'s model (where both
    are known), that the hook exists in `lm` and has the SAE's input width."""
    meta = sae.cfg.metadata
    made_for, loaded = _model_identity(meta.model_name), _model_identity(lm.spec)
    # An SAE trained on a local folder records the folder's name, not its path: a
    # loaded folder is only compared with an SAE that names a folder too.
    comparable = made_for and loaded and (Path(made_for).is_absolute() or not Path(loaded).is_absolute())
    if comparable and made_for != loaded:
        raise UserError(f"the SAE was made for the model {meta.model_name} but {lm.name} is loaded: "
                        f"pass --model {_spec_for_name(meta.model_name)} (or leave --model out)")
    hook = meta.hook_name
    if not hook:
        raise UserError("the SAE's cfg.json names no hook (metadata.hook_name)")
    _check_hook(lm, hook, who="the SAE's hook")
    width = hook_width(lm, hook)
    if width != sae.cfg.d_in:
        raise UserError(f"the SAE reads {sae.cfg.d_in}-wide activations but {hook} in {lm.name} is {width} wide")
    return hook


def check_features(d_sae: int, features, sae: str = "this SAE") -> None:
    """Every feature is one of the SAE's (0..d_sae-1), or one `UserError` naming the range.
    The one check used by pages, trees, ablations and the CLI."""
    for f in features:
        if not 0 <= f < d_sae:
            raise UserError(f"feature {f} is out of range: {sae} has features 0..{d_sae - 1}")
