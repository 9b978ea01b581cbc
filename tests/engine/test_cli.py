"""The headless commands as a user runs them: real subprocesses, real exit codes."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.paths import DEFAULT_MODEL_DIR
from tests.conftest import run_saescope


def test_predict_json_gives_a_sensible_continuation():
    r = run_saescope("predict", "def __init__(self", "--json", "--top", "5")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == "mini-gelu-1l"
    assert out["tokens"][0] == "<|endoftext|>" and "".join(out["tokens"][1:]) == "def __init__(self"
    probs = [t["prob"] for t in out["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0001
    assert {t["token"] for t in out["top"]} & {",", ")", "):", "),"}


def test_predict_probabilities_match_an_independent_softmax(default_model):
    import torch

    from engine.predict import predict

    text = "It is a truth universally acknowledged"
    out = predict(default_model, text, top=3)
    with torch.no_grad():
        logits = default_model.model(default_model.model.to_tokens(text))[0, -1].double()
    p = torch.exp(logits - torch.logsumexp(logits, 0))
    want = p.topk(3)
    assert [t["id"] for t in out["top"]] == want.indices.tolist()
    assert [t["prob"] for t in out["top"]] == pytest.approx(want.values.tolist(), rel=1e-5)


def test_models_json_lists_each_source():
    r = run_saescope("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = {row["spec"]: row for row in json.loads(r.stdout)}
    assert rows["default"]["available"] is True
    assert rows["NAME"]["available"] is False and "HF_HUB_OFFLINE" in rows["NAME"]["why"]
    assert "smollm2-135m" in rows


def _assert_one_clear_line(r, needle: str):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr and needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needle", [
    (["predict", "hello", "--model", "no-such-model"], "unknown model"),
    (["predict", ""], "empty"),
    (["predict", "   "], "empty"),
    (["predict", "word " * 300], "at most 128"),
    (["predict", "hi", "--top", "0"], "--top"),
    (["predict", "hi", "--model", "gpt2"], "cannot be reached"),
])
def test_bad_input_gets_one_line_and_exit_2(args, needle):
    _assert_one_clear_line(run_saescope(*args), needle)


def test_corrupt_weights_and_unsupported_folder(tmp_path):
    corrupt = tmp_path / "corrupt"
    shutil.copytree(DEFAULT_MODEL_DIR, corrupt)
    (corrupt / "model.safetensors").write_bytes(b"\x00" * 100)
    _assert_one_clear_line(run_saescope("predict", "hi", "--model", str(corrupt)), "corrupt")
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text('{"model_type": "bert"}')
    _assert_one_clear_line(run_saescope("predict", "hi", "--model", str(bert)), "not supported")


def test_missing_default_weights(tmp_path):
    r = run_saescope("predict", "hi", env={"SAESCOPE_WEIGHTS": str(tmp_path)})
    _assert_one_clear_line(r, "missing")


def test_a_cuda_device_that_is_not_there_is_one_clear_line():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    r = run_saescope("eval", "weights/saes/mlp_out-topk", "--tokens", "1024", "--device", "cuda")
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count("\n") == 0 and "CUDA is not available" in r.stderr
