"""SAEs from anywhere: pretrained SAELens releases, and SAEs that do not fit the model.

Bad SAEs are the shipped `weights/saes/mlp_out-topk` with an edited cfg.json, run
through the real CLI (exit code 2 and one `saescope:` line, never a traceback).
No test reaches the network: the hub is offline (tests/conftest.py).
"""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

from pathlib import Path

import pytest

from engine.errors import UserError
from engine.paths import WEIGHTS_DIR
from engine.saes import check_fits, hook_width, load_sae, model_spec_for, release_spec
from tests.conftest import run_saescope

SHIPPED = WEIGHTS_DIR / "saes" / "mlp_out-topk"
RELEASE = "gpt2-small-res-jb"


def one_error_line(result) -> str:
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("saescope: "), result.stderr
    return lines[0]


def edited_sae(tmp_path, **changes):
    """A copy of the shipped SAE whose cfg.json has `changes` (metadata keys too)."""
    folder = tmp_path / "sae"
    folder.mkdir(parents=True)
    for name in ("cfg.json", "sae_weights.safetensors"):
        shutil.copy(SHIPPED / name, folder / name)
    cfg = json.loads((folder / "cfg.json").read_text())
    for key, value in changes.items():
        (cfg["metadata"] if key in cfg["metadata"] else cfg)[key] = value
    (folder / "cfg.json").write_text(json.dumps(cfg))
    return folder


def test_release_offline_is_one_clear_error():
    line = one_error_line(run_saescope("eval", f"release:{RELEASE}/blocks.0.hook_resid_pre",
                                       env={"HF_HUB_OFFLINE": "1"}, timeout=300))
    assert "must be downloaded from the Hugging Face hub, which cannot be reached here" in line


def test_unknown_release_or_sae_id_lists_close_names():
    with pytest.raises(UserError, match=f"unknown SAELens release 'gpt2-small-res-jx'.*{RELEASE}"):
        load_sae("release:gpt2-small-res-jx/blocks.0.hook_resid_pre")
    with pytest.raises(UserError, match=f"{RELEASE}' has no SAE 'blocks.0.hook_resid_pro'.*blocks.0.hook_resid_pre"):
        load_sae(f"release:{RELEASE}/blocks.0.hook_resid_pro")


def test_release_spec_forms(tmp_path):
    assert release_spec(f"release:{RELEASE}/blocks.3.hook_resid_pre") == (RELEASE, "blocks.3.hook_resid_pre")
    assert release_spec(f"{RELEASE}/blocks.3.hook_resid_pre") == (RELEASE, "blocks.3.hook_resid_pre")
    assert release_spec(SHIPPED) is None  # a folder stays a folder
    # An existing path wins over a release of the same name.
    (tmp_path / RELEASE / "blocks.3.hook_resid_pre").mkdir(parents=True)
    assert release_spec(tmp_path / RELEASE / "blocks.3.hook_resid_pre") is None
    with pytest.raises(UserError, match="not an SAE folder") as e:
        load_sae("no-such-release/some_sae")
    # a relative path names the folder it was read from (the engine's, maybe not the user's)
    assert f"a relative path, read from the engine's folder {Path.cwd()}" in str(e.value)
    with pytest.raises(UserError) as e:
        load_sae(tmp_path / "absent")
    assert "relative" not in str(e.value)


@pytest.mark.parametrize("change, expected", [
    ({"model_name": "gpt2-small"}, "made for the model gpt2-small but mini-gelu-1l is loaded"),
    ({"model_name": "SmolLM2-135M-Instruct"}, "pass --model smollm2-135m"),
    ({"hook_name": "blocks.3.hook_mlp_out"}, "'blocks.3.hook_mlp_out' does not exist in mini-gelu-1l"),
    ({"hook_name": "blocks.0.mlp.hook_post"}, "reads 256-wide activations but blocks.0.mlp.hook_post"),
])
def test_sae_that_does_not_fit_is_a_clear_error(tmp_path, default_model, change, expected):
    with pytest.raises(UserError) as e:
        check_fits(load_sae(edited_sae(tmp_path, **change)), default_model)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_cli_sae_for_another_model_is_one_clear_line(tmp_path):
    folder = edited_sae(tmp_path, model_name="gpt2-small")
    line = one_error_line(run_saescope("eval", str(folder), "--model", "default", "--tokens", "256",
                                       timeout=300))
    assert "made for the model gpt2-small but mini-gelu-1l is loaded" in line


def test_wrong_d_in_is_refused(tmp_path, default_model):
    from sae_lens import StandardSAE, StandardSAEConfig
    from sae_lens.saes.sae import SAEMetadata

    StandardSAE(StandardSAEConfig(d_in=128, d_sae=64, metadata=SAEMetadata(
        hook_name="blocks.0.hook_mlp_out", model_name="mini-gelu-1l"))).save_model(tmp_path / "narrow")
    sae = load_sae(tmp_path / "narrow")
    with pytest.raises(UserError, match="reads 128-wide activations but blocks.0.hook_mlp_out .* is 256 wide"):
        check_fits(sae, default_model)


def test_model_spec_for_maps_names_to_specs():
    def spec(name):
        return model_spec_for(SimpleNamespace(cfg=SimpleNamespace(metadata=SimpleNamespace(model_name=name))))

    assert spec("mini-gelu-1l") == spec(None) == "default"
    assert spec("SmolLM2-135M-Instruct") == spec("smollm2-135m") == spec("SMOLLM2-135M") == "smollm2-135m"
    assert spec("gpt2-small") == "gpt2-small"
    assert spec("/models/my-llama") == "/models/my-llama"
    assert model_spec_for(load_sae(SHIPPED)) == "default"


def test_hook_z_width_is_heads_times_d_head(default_model, tmp_path):
    cfg = default_model.model.cfg
    assert hook_width(default_model, "blocks.0.attn.hook_z") == cfg.n_heads * cfg.d_head
    assert hook_width(default_model, "blocks.0.attn.hook_q") == cfg.d_head  # others: last dim
    assert hook_width(default_model, "blocks.0.hook_mlp_out") == cfg.d_model
    # mini-gelu has n_heads * d_head == d_model, so the shipped SAE fits on hook_z.
    sae = load_sae(edited_sae(tmp_path, hook_name="blocks.0.attn.hook_z"))
    assert check_fits(sae, default_model) == "blocks.0.attn.hook_z"


def test_model_check_compares_only_models_known_on_both_sides(default_model, tmp_path):
    from engine.models import LoadedModel
    from engine.paths import DEFAULT_MODEL_DIR

    def loaded_as(spec):  # the default model's weights, loaded under another spec
        return LoadedModel(spec, "mini-gelu-1l", "saescope-folder", default_model.model, "cpu", "float32")

    assert check_fits(load_sae(SHIPPED), loaded_as(str(DEFAULT_MODEL_DIR))) == "blocks.0.hook_mlp_out"
    # A folder model's SAE records the folder's name, which says nothing about other folders.
    folder_model = loaded_as(str(tmp_path))
    check_fits(load_sae(edited_sae(tmp_path / "a", model_name="gpt2-small")), folder_model)
    (tmp_path / "other-model").mkdir()
    sae = load_sae(edited_sae(tmp_path / "b", model_name=str(tmp_path / "other-model")))
    with pytest.raises(UserError, match="made for the model .*other-model"):
        check_fits(sae, folder_model)


def test_a_release_sae_is_kept_in_a_folder_and_indexed_there(default_model, tmp_path, monkeypatch):
    """The hub is the one edge a test cannot reach: `SAE.from_pretrained` hands back a
    shipped SAE; everything after it (the cached folder, its index, pages) is real."""
    from sae_lens import SAE

    from engine.inspect import SaeView

    calls = []

    def from_pretrained(cls, release, sae_id, device="cpu"):
        calls.append((release, sae_id))
        return SAE.load_from_disk(str(WEIGHTS_DIR / "saes" / "mlp_out-topk"), device=device)

    monkeypatch.setattr(SAE, "from_pretrained", classmethod(from_pretrained))
    monkeypatch.setenv("SAESCOPE_CACHE", str(tmp_path / "cache"))
    spec = "release:gpt2-small-res-jb/blocks.0.hook_resid_pre"
    view = SaeView(default_model, spec, index_tokens=128 * 8)
    assert view.dir.is_relative_to(tmp_path / "cache") and (view.dir / "cfg.json").exists()
    view.ensure_index()
    assert next((view.dir / "index").glob("*.safetensors")).exists()
    page = view.feature_page(int(view.index.fire_count.argmax()), top=2)
    assert page["examples"]
    again = SaeView(default_model, spec)  # the folder and its index are reused: no second download
    assert again.index is not None and calls == [("gpt2-small-res-jb", "blocks.0.hook_resid_pre")]
