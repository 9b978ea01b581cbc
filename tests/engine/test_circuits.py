"""Feature circuits on the default model: tasks, effects, edges, faithfulness by ablation.

The faithfulness figures are checked against an independent computation with plain
TransformerLens hooks; effects against exact ablations; bad input against its messages.
"""

from __future__ import annotations

import json

import pytest
import torch

from engine.circuits.discover import CircuitBuilder, find_circuit
from engine.circuits.evaluate import keep_masks
from engine.circuits.tasks import load_task
from engine.errors import UserError
from engine.protocol import CircuitFindParams
from tests.conftest import REPO

SAES = [str(REPO / "weights/saes/resid_mid-topk"), str(REPO / "weights/saes/mlp_out-topk")]


@pytest.fixture(scope="module")
def views(default_model):
    from engine.corpus import corpus_for
    from engine.inspect import SaeView

    return [SaeView(default_model, p, corpus=corpus_for(None, default_model)) for p in SAES]


@pytest.fixture(scope="module")
def task(default_model):
    return load_task("was_were", default_model)


@pytest.fixture(scope="module")
def found(default_model, views, task):
    params = CircuitFindParams(task="was_were", saes=SAES, points=8, max_nodes=400)
    return find_circuit(default_model, views, SAES, task, params)


def _plain_figures(lm, saes, task, kept: list[set[int]], errors: list[bool]) -> tuple[float, float]:
    """Faithfulness and completeness of a circuit (features `kept[i]`, error `errors[i]` at site i) with
    plain hooks: the SAE spliced by hand, nodes outside the circuit set to their means
    over the discovery split's patch prompts, on the held-out split."""
    disc, held = task.split()
    hooks = [s.cfg.metadata.hook_name for s in saes]
    means = []
    with torch.no_grad():
        _, cache = lm.model.run_with_cache(disc.patch, names_filter=hooks)
        for s, h in zip(saes, hooks):
            f = s.encode(cache[h])
            means.append((f.mean(0), (cache[h] - s.decode(f)).mean(0)))

    def metric(circuit: bool | None) -> float:
        def splice(i):
            def hook(act, hook):
                f = saes[i].encode(act)
                e = act - saes[i].decode(f)
                mf, me = means[i]
                keep = torch.zeros(f.shape[-1], dtype=torch.bool)
                if circuit is not None:
                    keep[list(kept[i])] = True
                keep_e = errors[i] if circuit is not None else False
                if circuit is False:  # the complement: everything but the circuit
                    keep, keep_e = ~keep, not keep_e
                f2 = torch.where(keep, f, mf)
                e2 = e if keep_e else me.expand_as(e)
                out = saes[i].decode(f2) + e2
                out[:, 0] = act[:, 0]
                return out
            return hook

        with torch.no_grad():
            fwd = [] if circuit == "model" else [(h, splice(i)) for i, h in enumerate(hooks)]
            logits = lm.model.run_with_hooks(held.clean, fwd_hooks=fwd)[:, -1]
        rows = torch.arange(len(held))
        return float((logits[rows, held.patch_answers] - logits[rows, held.clean_answers]).mean())

    m_model, m_empty, m_c, m_rest = metric("model"), metric(None), metric(True), metric(False)
    return (m_c - m_empty) / (m_model - m_empty), (m_rest - m_empty) / (m_model - m_empty)


def test_faithfulness_and_completeness_equal_plain_hooks(default_model, views, task, found):
    builder, result = found
    kept = [set(), set()]
    for n in result.nodes:
        if n.feature is not None:
            kept[n.site_index].add(n.feature)
    errors = [any(n.site_index == i and n.feature is None for n in result.nodes) for i in range(2)]
    faith, comp = _plain_figures(default_model, [v.sae for v in views], task, kept, errors)
    assert result.figures.faithfulness == pytest.approx(faith, abs=1e-4)
    assert result.figures.completeness == pytest.approx(comp, abs=1e-4)
    assert result.figures.nodes == len(result.nodes)


def test_keeping_every_node_is_the_model(found):
    builder, _ = found
    m_c, m_rest, faith, comp = builder.evaluator.evaluate(keep_masks(builder.effects, -1.0, True))
    assert faith == pytest.approx(1.0, abs=1e-4)
    assert comp == pytest.approx(0.0, abs=1e-4)


def test_sweep_and_crossings(found):
    _, result = found
    assert [p.nodes for p in result.curve] == sorted(p.nodes for p in result.curve)
    assert all(p.features == p.nodes for p in result.curve_features)
    big = max(result.curve, key=lambda p: p.nodes)
    assert big.faithfulness > 0.8  # the whole model's nodes (error terms included) carry the behaviour
    if result.crossings.half is not None:
        assert any(p.nodes == result.crossings.half and p.faithfulness >= 0.5 for p in result.curve)


def test_attribution_ranks_like_exact_node_effects(found):
    builder, result = found
    check = builder.verify([n.id for n in result.nodes[:10]], [])
    assert check.spearman_nodes > 0.8
    for v in check.nodes:
        assert abs(v.exact - v.estimate) < 0.5 * abs(v.exact) + 0.05


def test_edges_agree_with_two_node_ablations(found):
    builder, result = found
    inner = sorted((e for e in result.edges if e.target != "metric"), key=lambda e: -abs(e.effect))[:4]
    to_metric = sorted((e for e in result.edges if e.target == "metric"), key=lambda e: -abs(e.effect))[:4]
    assert inner, "a circuit over two sites has edges between them"
    check = builder.verify([], [[e.source, e.target] for e in inner + to_metric])
    # The linear estimate misses features a TopK SAE switches on only when patched (their
    # gradient is 0 at the clean point), so it is low by up to 2-3x here; signs and ranks hold.
    for v in check.edges:
        assert v.exact * v.estimate > 0 or abs(v.exact) < 0.01
        if v.target == "metric":  # direct effects through one linear unembedding: close
            assert v.exact == pytest.approx(v.estimate, rel=0.3)
    assert check.spearman_edges > 0.5


def test_integrated_gradients_add_up_to_patching_the_site(default_model, views, task):
    """IG's completeness: a site's node effects (features and error) sum to what patching
    the whole site does, to within the path integral's discretisation."""
    params = CircuitFindParams(task="was_were", saes=SAES[:1], method="ig", ig_steps=10)
    builder = CircuitBuilder(default_model, views[:1], SAES[:1], task, params)
    total = float(builder.effects.features[0].sum() + builder.effects.errors[0].sum())
    # every feature and the error term patched at once is the site's activation patched: plain hooks
    name = views[0].sae.cfg.metadata.hook_name
    with torch.no_grad():
        _, cache = default_model.model.run_with_cache(builder.disc.patch, names_filter=[name])
        patched = default_model.model.run_with_hooks(
            builder.disc.clean, fwd_hooks=[(name, lambda a, hook: torch.cat([a[:, :1], cache[name][:, 1:]], 1))])[:, -1]
        clean = default_model.model(builder.disc.clean)[:, -1]
    rows = torch.arange(len(builder.disc))
    m = lambda lg: lg[rows, builder.disc.patch_answers] - lg[rows, builder.disc.clean_answers]  # noqa: E731
    expected = float((m(patched) - m(clean)).mean())
    assert total == pytest.approx(expected, rel=0.05)


def test_cancelled_sweep_keeps_its_points(default_model, views, task):
    """A cancel during the sweep still answers: the circuit, and the curve points done."""
    from engine.jobs import Job

    params = CircuitFindParams(task="was_were", saes=SAES, points=8)
    job = Job(min_interval=0)  # every progress event, however close together
    sweeps = []

    def emit(kind, data):
        if str(data.get("message", "")).startswith("sweep"):
            sweeps.append(data)
            if len(sweeps) == 3:
                job.cancel()
    job.emit = emit
    builder, result = find_circuit(default_model, views, SAES, task, params, job)
    assert not builder.complete and not result.complete
    assert 1 <= len(result.curve) < 8 and result.curve_features == []
    assert result.nodes and result.figures.nodes == len(result.nodes)


def test_bad_input(default_model, views, task, found, tmp_path):
    builder, _ = found

    def task_file(lines) -> str:
        p = tmp_path / "t.jsonl"
        p.write_text("".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines))
        return str(p)

    pair = {"clean": "She said that her man", "patch": "She said that her men", "clean_answer": " was",
            "patch_answer": " were"}
    cases = [
        ([], "is empty"),
        (["{not json"], "line 1: not JSON"),
        ([pair, {"clean": "x"}], "line 2: a line has clean, patch"),
        ([{**pair, "clean_answer": " wasn't"}], "must be one token"),
        ([{**pair, "patch": "She said that all her men"}], "same token length"),
        ([pair, {**pair, "clean": "He said it", "patch": "He said they"}], "different token lengths"),
        ([pair, {"prompt": "x", "answer": " y"}], "mixes pairs and single prompts"),
        ([{**pair, "patch_answer": " was"}], "are the same token"),
        ([{**pair, "patch": pair["clean"]}], "the same prompt"),
    ]
    for lines, message in cases:
        with pytest.raises(UserError, match=message):
            load_task(task_file(lines), default_model)
    with pytest.raises(UserError, match="no task file"):
        load_task("no_such_task", default_model)
    with pytest.raises(UserError, match="model order"):
        CircuitBuilder(default_model, views[::-1], SAES[::-1], task, CircuitFindParams(task="t", saes=SAES))
    with pytest.raises(UserError, match="keeps no node"):
        builder.circuit(1e9, True)
    with pytest.raises(UserError, match="out of range"):
        builder.verify(["mlp_out/99999"], [])
    with pytest.raises(UserError, match="edges go to a later site"):
        builder.verify([], [["mlp_out/1", "resid_mid/2"]])


def test_single_prompt_tasks(default_model, views, tmp_path):
    p = tmp_path / "single.jsonl"
    p.write_text("".join(json.dumps({"prompt": f"She said that her {w}", "answer": " was"}) + "\n"
                         for w in ("man", "lady", "sister", "friend", "child", "man")))
    task = load_task(str(p), default_model)
    assert task.kind == "single" and task.patch is None
    params = CircuitFindParams(task=str(p), saes=SAES, points=4, max_nodes=50)
    builder, result = find_circuit(default_model, views, SAES, task, params)
    assert result.metric == "logit(answer)" and result.nodes


def test_per_position_nodes(default_model, views, task):
    params = CircuitFindParams(task="was_were", saes=SAES, per_position=True, points=4, max_nodes=100)
    builder, result = find_circuit(default_model, views, SAES, task, params)
    assert all("@" in n.id and n.position is not None for n in result.nodes)
    assert all(0 <= n.position < task.length - 1 for n in result.nodes)
    _, _, faith, comp = builder.evaluator.evaluate(keep_masks(builder.effects, -1.0, True))
    assert faith == pytest.approx(1.0, abs=1e-4) and comp == pytest.approx(0.0, abs=1e-4)
    node = builder.parse_id(result.nodes[0].id)
    assert builder.node_id(node) == result.nodes[0].id
    with pytest.raises(UserError, match="needs a position"):
        builder.parse_id("mlp_out/3")


def test_summary_for_a_person(found):
    """`saescope circuit` without --json: the figures, the curves and the largest nodes."""
    from rich.console import Console

    from engine.render import render_circuit

    builder, result = found
    checked = builder.verify([result.nodes[0].id], [])
    console = Console(width=100, record=True)
    console.print(render_circuit(result, checked))
    text = console.export_text()
    f = result.figures
    flat = " ".join(text.split())  # rich wraps the summary line at the console's width
    assert f"faithfulness {f.faithfulness:.2f} (m(C)/m(M) {f.plain:.2f}) completeness {f.completeness:.2f}" in flat
    assert f.plain == pytest.approx(f.m_circuit / f.m_model)
    assert "features only" in text and result.nodes[0].id in text and "exact effects by ablation" in text
