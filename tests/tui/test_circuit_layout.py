"""The Circuit pane's torch-free parts on a constructed result (no engine, no screen):
the layered tree (metric, nodes feeding it, upstream nodes by their edges, biggest
first; nodes without a path to the metric grouped by site), aligned labels,
the summary line (a mask circuit's lambda and plain m(C)/m(M)), the methods' curves
in one plot with its marker and legend, the method cycle and the book of curves
per task and sites, stepping along the sweep, and the typed task and sites."""

from __future__ import annotations

import math

from rich.text import Text

from tests.tui.circuit_fixture import CURVE, CURVE_FEATURES, MASK_CURVE, found, mask_found
from tui.circuit_inputs import format_sites, parse_sites, task_param
from tui.circuit_layout import CircuitLayout, Columns, Row, node_label, step_point, summary
from tui.circuit_methods import CurveBook, MethodCurves, next_method
from tui.circuit_plot import COLOURS, curve_plot, legend


def ids(rows: list[Row]) -> list[str]:
    return [r.node.id if r.kind == "node" else f"{r.kind}:{r.site}" for r in rows]


def test_tree_layers_from_the_metric_down_the_edges():
    layout = CircuitLayout(found())
    top = layout.children(layout.root)
    # the biggest |edge| first; the edgeless node last, in a group
    assert ids(top) == ["mlp_out/812", "mlp_out/error", "attn_out/1453", "attn_out/230", "unconnected:mlp_out"]
    assert [r.edge for r in top[:4]] == [0.610, 0.301, 0.280, -0.150]
    assert all(r.parent == "metric" for r in top[:4])
    under = layout.children(top[0])
    assert ids(under) == ["attn_out/1453", "resid_pre/77", "attn_out/230"]
    assert [r.edge for r in under] == [0.322, 0.118, -0.040] and all(r.parent == "mlp_out/812" for r in under)
    assert ids(layout.children(under[0])) == ["resid_pre/77"]  # a node fed into two others appears under both
    assert not layout.has_children(layout.children(under[0])[0])  # the first site: nothing upstream
    assert not layout.has_children(top[1])  # an error term is a leaf
    group = top[-1]
    assert group.count == 1 and ids(layout.children(group)) == ["mlp_out/64"]
    assert layout.children(group)[0].edge is None
    # every node is somewhere in the tree
    seen, stack = set(), [layout.root]
    while stack:
        row = stack.pop()
        if row.kind == "node":
            seen.add(row.node.id)
        stack.extend(layout.children(row) if layout.has_children(row) else [])
    assert seen == {n.id for n in found().nodes}


def test_labels_line_up_across_levels_and_mark_error_terms():
    layout = CircuitLayout(found())
    columns = Columns.of(layout, indent=3)
    top = layout.children(layout.root)
    deep = layout.children(layout.children(top[0])[0])[0]
    a, b = node_label(top[0], 1, columns).plain, node_label(deep, 3, columns).plain
    # indent + label: the effect starts in the same column at depth 1 and 3
    assert 3 * 1 + a.index("+0.912") == 3 * 3 + b.index("+0.415")
    assert "→+0.610" in a and "' was' after she/he/it" in a
    error = node_label(top[1], 1, columns)
    assert error.plain.startswith("mlp_out ε") and "error term" in error.plain
    assert any("italic" in str(span.style) for span in error.spans)
    negative = node_label(top[3], 1, columns, exact=-0.2, edge_exact=-0.125).plain
    assert "−0.188 =−0.200  →−0.150 =−0.125" in negative  # exact beside the estimates, real minus signs


def test_summary_and_partial_mark():
    text = summary(found()).plain
    assert text == "7 nodes (1 ε) · threshold 0.143 · faithfulness 0.830 · completeness 0.310"
    assert len(text) <= 78  # an 80-column pane, less its padding
    assert summary(found(complete=False), complete=False).plain.endswith("· partial")
    mask = summary(mask_found()).plain  # lambda, not a threshold; plain beside faithfulness
    assert mask == "3 nodes (1 ε) · lambda 64 · faithfulness 1.040 (plain 1.030) · completeness 0.050"
    lines = summary(mask_found(), width=78).plain.splitlines()  # broken between parts only
    assert lines == ["3 nodes (1 ε) · lambda 64 · faithfulness 1.040 (plain 1.030)", "completeness 0.050"]


def test_stepping_along_the_sweep():
    t = CURVE[3].threshold
    assert step_point(CURVE, t, 1) == CURVE[2]  # a higher threshold: the smaller circuit
    assert step_point(CURVE, t, -1) == CURVE[4]
    assert step_point(CURVE, CURVE[0].threshold, 1) is None and step_point(CURVE, CURVE[-1].threshold, -1) is None
    # a threshold off the curve (errors toggled): the nearest point on the side asked for
    between = (CURVE_FEATURES[5].threshold + CURVE_FEATURES[6].threshold) / 2
    assert step_point(CURVE_FEATURES, between, 1) == CURVE_FEATURES[5]
    assert step_point(CURVE_FEATURES, between, -1) == CURVE_FEATURES[6]


def test_curve_plot_log_x_and_marker():
    drawn = Text.from_ansi(curve_plot({"attribution": CURVE}, 7, 76, 8)).plain
    lines = drawn.splitlines()
    assert len(lines) == 8 and all(len(line) <= 76 for line in lines)
    assert lines[-1].split() == ["1", "10", "100", "1000"]  # node counts on a log axis
    assert "1.0" in drawn and "0.0" in drawn
    ansi = curve_plot({"attribution": CURVE}, 7, 76, 8)
    assert "38;5;226" in ansi  # the marker's colour: the circuit shown
    # the marker sits at log10(7) of the axis: the same column in the top and bottom rows
    x0, x1 = lines[-1].index("1"), lines[-1].index("1000")
    column = x0 + round((x1 - x0) * math.log10(7) / 3)
    marks = [i for i, ch in enumerate(lines[1]) if ch != " " and abs(i - column) <= 1]
    assert marks, lines
    assert "no sweep" in Text.from_ansi(curve_plot({}, None, 76, 8)).plain
    assert "no sweep" in Text.from_ansi(curve_plot({"mask": []}, None, 76, 8)).plain


def test_three_methods_in_one_plot_with_a_legend():
    curves = {"attribution": CURVE, "ig": CURVE_FEATURES, "mask": MASK_CURVE}
    ansi = curve_plot(curves, 165, 76, 8)
    assert all(f"38;5;{COLOURS[m]}m" in ansi for m in curves)  # each method in its colour
    assert len(set(COLOURS.values())) == 3
    assert len(Text.from_ansi(ansi).plain.splitlines()) == 8
    text = legend(True, set(curves), "mask")
    assert text.plain == "faithfulness, with ε:  ━ attribution  ━ IG  ━ mask   ┊ shown"
    assert len(legend(False).plain) <= 78
    assert legend(False, {"mask"}).plain.startswith("faithfulness, features only:  ╌ attribution  ╌ IG  ━ mask")


def test_the_method_cycle_and_the_book_of_curves():
    assert [next_method(m) for m in ("attribution", "ig", "mask")] == ["ig", "mask", "attribution"]
    book = CurveBook()
    book.put("was_were", ["/a", "/b"], "mask", MethodCurves(MASK_CURVE, []))
    book.put("was_were", ["/a", "/b"], "attribution", MethodCurves(CURVE, CURVE_FEATURES))
    assert list(book.for_errors(True)) == ["attribution", "mask"]  # the cycle's order
    assert book.for_errors(False) == {"attribution": CURVE_FEATURES, "mask": []}
    book.put("was_were", ["/a", "/c"], "ig", MethodCurves(CURVE, CURVE_FEATURES))  # other sites: afresh
    assert list(book.for_errors(True)) == ["ig"]


def test_typed_task_and_sites():
    assert task_param(" was_were ", True) == "was_were"  # a shipped name goes as typed
    assert task_param("my/task.jsonl", True).endswith("/my/task.jsonl") and task_param("my/task.jsonl", True)[0] == "/"
    assert task_param("my/task.jsonl", False) == "my/task.jsonl"  # a remote engine reads its own paths
    paths = ["/w/saes/a", "/w/my saes/b"]
    assert parse_sites(format_sites(paths), True) == paths
    assert parse_sites("/w/a, /w/b", True) == ["/w/a", "/w/b"]
