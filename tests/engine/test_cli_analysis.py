"""`saescope index / inspect / ablate` as a user runs them, on the shipped default SAEs."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.paths import WEIGHTS_DIR
from tests.conftest import run_saescope

SAES = WEIGHTS_DIR / "saes"


@pytest.fixture(scope="module")
def saes(tmp_path_factory):
    """Copies of the default pair (so tests never write into weights/), indexed on 32k tokens."""
    root = tmp_path_factory.mktemp("cli")
    out = {}
    for name in ("resid_mid-topk", "mlp_out-topk"):
        dst = root / name
        shutil.copytree(SAES / name, dst, ignore=shutil.ignore_patterns("index", "metrics.jsonl"))
        r = run_saescope("index", str(dst), "--tokens", str(1 << 15))
        assert r.returncode == 0, r.stderr
        out[name] = dst
    return out


def test_inspect_json_has_the_promised_fields(saes):
    r = run_saescope("inspect", str(saes["mlp_out-topk"]), "5", "--top", "4", "--json")
    assert r.returncode == 0, r.stderr
    page = json.loads(r.stdout)
    for key in ("feature", "density", "max_activation", "examples", "histogram", "logits"):
        assert key in page
    assert page["feature"] == 5 and len(page["logits"]["top"]) == 10
    for e in page["examples"]:
        assert set(e) >= {"tokens", "acts", "max"} and len(e["tokens"]) == len(e["acts"])


def test_inspect_renders_for_a_person(saes):
    r = run_saescope("inspect", str(saes["mlp_out-topk"]), "5", "--top", "3")
    assert r.returncode == 0 and "top examples" in r.stdout and "logit effects" in r.stdout


def test_ablate_json_tree(saes):
    r = run_saescope("ablate", "--upstream", str(saes["resid_mid-topk"]), "--downstream",
                     str(saes["mlp_out-topk"]), "--prompt", "def __init__(self", "--top", "3", "--depth", "2",
                     "--json")
    assert r.returncode == 0, r.stderr
    tree = json.loads(r.stdout)["tree"]
    assert tree["node"]["kind"] == "metric" and len(tree["children"]) == 3
    child = next(c for c in tree["children"] if c["node"]["kind"] == "feature")
    assert {"node", "effect", "method", "children"} <= set(child) and len(child["children"]) == 3


@pytest.mark.parametrize("args, needle", [
    (["inspect", "{down}", "999999"], "out of range"),
    (["inspect", "{nowhere}", "1"], "not an SAE folder"),
    (["ablate", "--upstream", "{down}", "--downstream", "{up}", "--prompt", "x"], "model order"),
    (["ablate", "--upstream", "{up}", "--downstream", "{down}", "--prompt", "x = 1", "--position", "9"], "beyond the prompt"),
    (["ablate", "--upstream", "{up}", "--downstream", "{down}", "--prompt", ""], "empty"),
    (["ablate", "--upstream", "{up}", "--downstream", "{down}", "--prompt", "x", "--feature", "99999"], "out of range"),
])
def test_bad_input(saes, tmp_path, args, needle):
    paths = {"up": saes["resid_mid-topk"], "down": saes["mlp_out-topk"], "nowhere": tmp_path}
    r = run_saescope(*[a.format(**paths) for a in args])
    assert r.returncode == 2, r.stderr
    assert needle in r.stderr and "Traceback" not in r.stderr


def test_ablate_uninterpretable_prints_a_table_and_checks_the_position(saes):
    args = ("ablate", "--upstream", str(saes["resid_mid-topk"]), "--downstream", str(saes["mlp_out-topk"]),
            "--prompt", "def __init__(self", "--uninterpretable", "--method", "attribution", "--top", "4")
    r = run_saescope(*args)
    assert r.returncode == 0, r.stderr
    assert "most important" in r.stdout and "not interpretable" in r.stdout and not r.stdout.lstrip().startswith("{")
    important = r.stdout.split("most important")[1].split("not interpretable")[0]
    assert important.count(" #") == 4  # --top rows, each a feature
    bad = run_saescope(*args, "--position", "99")
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "beyond the prompt" in bad.stderr


def test_circuit_json_and_bad_input(saes, tmp_path):
    small = tmp_path / "was_were_12.jsonl"  # the shipped task's first 12 pairs: the command, not the figures
    small.write_text("".join((WEIGHTS_DIR / "tasks" / "was_were.jsonl").read_text().splitlines(True)[:12]))
    args = ["circuit", "--task", str(small), "--sae", str(saes["resid_mid-topk"]), "--sae", str(saes["mlp_out-topk"])]
    r = run_saescope(*args, "--threshold", "0.05", "--features-only", "--sweep", "--max-nodes", "60", "--points", "4",
                     "--verify", "3", "--json", timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for key in ("nodes", "edges", "figures", "curve", "curve_features", "crossings", "verified"):
        assert key in out
    assert {n["site"] for n in out["nodes"]} <= {"resid_mid", "mlp_out"}
    assert all("feature" in n for n in out["nodes"])  # --features-only: no error node
    assert out["figures"]["threshold"] == 0.05 and all(abs(n["effect"]) > 0.05 for n in out["nodes"])
    assert all(set(e) == {"source", "target", "effect"} for e in out["edges"])
    assert out["curve"] and out["curve"][-1]["nodes"] <= 60 + 2
    assert len(out["verified"]["nodes"]) == 3
    bad = run_saescope("circuit", "--task", "nothing_here", "--sae", str(saes["mlp_out-topk"]))
    assert bad.returncode != 0 and "no task file" in bad.stderr
