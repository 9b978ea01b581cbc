"""The Ablation pane driven by the pilot against a real engine: a tree for a prompt,
expanding two levels, ablating and restoring a node with one key, the prediction
before and after, the down tree, checking attribution against exact ablation,
switching to exact and to mean ablation and to another position (the ablations
kept), an error in full, exporting, opening a node in the Inspector; and
snapshots at 80x24."""

from __future__ import annotations

import asyncio
import json

from textual.widgets import TabbedContent

from tests.tui.sae_setup import PROMPT, TOKEN, sae_engine  # noqa: F401 (a fixture)
from tui.target import EngineTarget
from tui.widgets.ablation_pane import AblationPane
from tui.widgets.inspector_pane import InspectorPane
from tui.widgets.prediction_change import PredictionChangeView
from tui.widgets.sae_field import SaeField
from tui.widgets.token_cursor import TokenCursor


def labels(tree_node) -> list[str]:
    return [str(c.label) for c in tree_node.children]


async def move_to(pilot, tree, target) -> None:
    """Move the tree's cursor to `target` with the arrow keys."""
    while tree.cursor_node is not target:
        await pilot.press("down" if tree.cursor_line < target.line else "up")


def _plain(widget) -> str:
    """What a widget shows, as plain text."""
    from rich.console import Console

    console = Console(width=80, record=True, file=open("/dev/null", "w"))
    console.print(widget.content)  # what the Static was given: text, a table
    return console.export_text()


def first_feature(tree_node):
    return next(c for c in tree_node.children if c.data.node.node.kind == "feature")


def test_ablation_tree_expand_ablate_check_inspect(make_app, model_loaded, wait_until, sae_engine, monkeypatch,
                                                    tmp_path):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))
    monkeypatch.chdir(tmp_path)

    async def main():
        app = make_app(EngineTarget.tcp(sae_engine.address, token=TOKEN))
        async with app.run_test(size=(80, 24)) as pilot:
            await model_loaded(pilot)
            await pilot.press("ctrl+p", *"Show pane: Ablation")
            await pilot.pause(0.4)
            await pilot.press("enter")
            pane = app.query_one(AblationPane)
            assert app.query_one(TabbedContent).active == "ablation" and app.focused is pane.prompt_input
            assert pane.sae_paths == [sae_engine.up, sae_engine.down]

            await pilot.press(*PROMPT, "enter")
            await wait_until(pilot, lambda: pane.state is not None, 60, "the tree")
            s, tree = pane.state, pane.tree
            assert app.focused is tree
            tokens = s.opened.tokens
            assert tokens[0] == "def" and s.opened.position == len(tokens) - 1
            chips = pane.query_one(TokenCursor)
            assert chips.tokens == tokens and chips.index == len(tokens) - 1
            assert str(tree.root.label).startswith("predicts ")
            children = s.up.children
            assert len(children) == 8 and len(tree.root.children) == 8
            effects = [abs(c.effect) for c in children]
            assert effects == sorted(effects, reverse=True)
            assert all(" ≈ " in line for line in labels(tree.root))
            for node in tree.root.children:  # an error term has no children: no ▶
                assert node.allow_expand == (node.data.node.node.kind == "feature")
            sign = "+" if children[0].effect > 0 else "−"
            assert f"{sign}{abs(children[0].effect):.3f}" in labels(tree.root)[0]

            # Level 1: a downstream feature's own drivers, computed when it is expanded.
            child = first_feature(tree.root)
            await move_to(pilot, tree, child)
            await pilot.press("enter")
            await wait_until(pilot, lambda: child.data.node.children is not None and child.children
                             and child.children[0].data is not None, 30, "the first expansion")
            assert all(c.data.node.node.site == "resid_mid" for c in child.children)
            # Level 2: an upstream feature (the first site: nothing feeds it).
            grandchild = first_feature(child)
            await move_to(pilot, tree, grandchild)
            assert not grandchild.allow_expand and "▶" not in str(tree.render_lines(tree.region)[0])

            # Ablate it: the prediction before and after; the same key restores it.
            f = grandchild.data.node.node.feature
            view = pane.query_one(PredictionChangeView)
            await pilot.press("a")
            await wait_until(pilot, lambda: pane.control.prediction is not None, 30, "the prediction after")
            change = pane.control.prediction
            assert pane.direction == "up" and str(tree.cursor_node.label).startswith("✗ ")
            assert view.display and "prediction " in str(view.render())
            assert str(view.render()).count("→") == 1  # one line over the up tree
            await pilot.press("a")
            assert pane.state.ablated is None and pane.control.prediction is None and not view.display
            await wait_until(pilot, lambda: not str(tree.cursor_node.label).startswith("✗ "), 5, "the restore")
            await pilot.press("a")
            await wait_until(pilot, lambda: pane.control.prediction is not None, 30, "the prediction again")
            assert pane.control.prediction == change

            # The down tree: what the ablation drives, and the prediction table.
            await pilot.press("d")
            assert pane.direction == "down"
            assert str(tree.root.label) == f"ablate resid_mid #{f} (zero)"
            down_kinds = {c.data.node.node.kind for c in tree.root.children}
            assert "logit" in down_kinds and down_kinds <= {"feature", "logit"}
            assert all(" = " in line for line in labels(tree.root))
            shown = _plain(view)
            assert "before" in shown and "after" in shown and "change" in shown
            top = max(change.rows, key=lambda r: r.after)
            assert f"{top.before:.1%}" in shown and f"{top.after:.1%}" in shown
            # A down node expands with what ablating it alone drives.
            down_child = next((c for c in tree.root.children if c.allow_expand), None)
            if down_child is not None:
                await move_to(pilot, tree, down_child)
                await pilot.press("enter")
                await wait_until(pilot, lambda: down_child.data.node.children is not None, 30, "a down expansion")
            # Back up: the ablated feature is marked and the cursor is where it was.
            await pilot.press("d")
            assert pane.direction == "up"
            await wait_until(pilot, lambda: tree.cursor_node.data.node.node.feature == f, 5, "the cursor")
            assert str(tree.cursor_node.label).startswith("✗ ")

            # Check the root's attributions against exact ablation.
            await move_to(pilot, tree, tree.root)
            await pilot.press("c")
            await wait_until(pilot, lambda: () in s.checks, 60, "the check")
            check = s.checks[()]
            assert check.n >= 8 and -1 <= check.spearman <= 1
            assert f"✓ n={check.n} r={check.pearson:.3f}" in str(tree.root.label)
            pairs = {p.feature: p for p in check.pairs}
            for node, line in zip(tree.root.children, labels(tree.root)):
                n = node.data.node
                if n.node.kind == "feature":  # the exact value beside the attributed one
                    exact = pairs[n.node.feature].exact
                    assert f"={'+' if exact >= 0 else '−'}{abs(exact):.3f}" in line
                    assert abs(pairs[n.node.feature].attribution - n.effect) < 1e-4

            # Mean ablation: the tree and the ablation are computed again in that mode.
            await pilot.press("z")
            await wait_until(pilot, lambda: pane.state.mode == "mean" and pane.state.down is not None, 90,
                             "the mean-ablation tree")
            s = pane.state
            assert s.down.node.mode == "mean" and s.ablated == (0, (f,))

            # Exact effects: the tree is recomputed, the open node opened again.
            key = child.data.node.node.feature
            await pilot.press("x")
            await wait_until(pilot, lambda: pane.state is not s, 90, "the exact tree")
            s = pane.state
            assert s.method == "exact" and all(c.method == "exact" for c in s.up.children)
            assert all(" = " in line for line in labels(tree.root))
            reopened = [c for c in s.up.children if c.node.feature == key]
            assert not reopened or reopened[0].children is not None
            assert s.ablated == (0, (f,)) and s.mode == "mean"  # the ablation survives a method change

            # Another position: the ablations are kept, and ablated again there.
            position = s.opened.position
            await pilot.press("left_square_bracket")
            await wait_until(pilot, lambda: pane.state.opened.position == position - 1
                             and pane.state.down is not None, 90, "the tree one token earlier")
            assert pane.state.ablated == (0, (f,)) and pane.control.prediction is not None

            # An error is shown in full, and the SAE fields name the SAEs of the tree shown.
            fields = pane.query(SaeField)
            fields.last().set_path(sae_engine.up)
            pane.open_tree()
            info = pane.query_one("#ablate-info")
            await wait_until(pilot, lambda: info.has_class("-error"), 30, "the error")
            await pilot.pause(0.1)  # a layout pass
            assert pane.sae_paths == [sae_engine.up, sae_engine.down]
            error = str(info.render())
            hook = pane.state.opened.sites[0].hook
            assert "model order" in error and error.rstrip().endswith(f"{hook}, {hook}")  # the whole line
            assert info.size.height > 1 and "…" not in error  # wrapped, not cut off
            await pilot.press("escape")
            tree.focus()

            # Export, then open a feature in the Inspector.
            await pilot.press("e")
            data = json.loads(pane.last_export.read_text())
            assert pane.last_export.parent == tmp_path and data["method"] == "exact"
            s = pane.state
            assert data["up"]["children"][0]["effect"] == s.up.children[0].effect
            assert data["ablated"] == {"site": 0, "features": [f]}
            assert data["prediction"]["rows"][0]["after"] == pane.control.prediction.rows[0].after
            node = first_feature(tree.root)
            await move_to(pilot, tree, node)
            await pilot.press("o")
            inspector = app.query_one(InspectorPane)
            feature = node.data.node.node.feature
            await wait_until(pilot, lambda: inspector.current == (sae_engine.down, feature), 5, "the Inspector")
            await pilot.pause(0.2)
            assert app.query_one(TabbedContent).active == "inspector", (app.focused, app.query_one(TabbedContent).active)
            await wait_until(pilot, lambda: inspector.page_view.page is not None
                             and inspector.page_view.page.feature == feature, 30, "the feature's page")

    asyncio.run(main())


def test_ablation_80x24(snap_compare, make_app, model_loaded, wait_until, sae_engine, monkeypatch):
    monkeypatch.setenv("SAESCOPE_WEIGHTS", str(sae_engine.weights))

    async def run_before(pilot) -> None:
        app = pilot.app
        await model_loaded(pilot)
        app.action_show_pane("ablation")
        pane = app.query_one(AblationPane)
        await wait_until(pilot, lambda: app.focused is pane.prompt_input, 10, "the Ablation pane")
        await pilot.press(*PROMPT, "enter")
        await wait_until(pilot, lambda: pane.state is not None, 60, "the tree")
        child = first_feature(pane.tree.root)
        await move_to(pilot, pane.tree, child)
        await pilot.press("enter")
        await wait_until(pilot, lambda: child.data.node.children is not None and not app.jobs, 30, "an expansion")
        await pilot.pause(0.2)

    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=run_before)
