"""The ablation tree as a Textual Tree: one line per node (what it is, its signed
effect, ≈ attributed or = exact, a bar for its size among its siblings, its
feature's top tokens), expanded lazily.

Each TreeNode's data is a `NodeRef`: the node's path of child indices from the
root (as `tree.expand` takes it) and the engine's node (`engine.protocol.TreeNode`). Expanding a node
whose `children` is null posts `ExpandWanted`; the pane asks the engine and
calls `set_children`.

Notes
- The widget keeps no state of its own beyond what it draws: the pane owns the
  nodes, the ablated features and the checks, and calls `relabel()` after
  changing them.
- While a node's children are computed it shows a single `computing…` line, so
  a key press is answered at once.
- A check's exact values are shown beside each child it covers (`=+0.41`), and
  the agreement (n, Pearson r, Spearman ρ) on the checked node's own line.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.protocol import TreeAgreement
from engine.protocol import TreeNode as Node
from engine.feature_text import node_label
from tui.tree_state import expandable

Path = tuple[int, ...]


@dataclass
class NodeRef:
    path: Path
    node: Node


class AblationTree(Tree[NodeRef]):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
        Binding("enter", "select_cursor", "Expand", id="tree.expand", show=False,
                tooltip="Expand or collapse the node (its children are computed the first time)"),
        Binding("space", "toggle_node", "Toggle", show=False, tooltip="Expand or collapse the node"),
    ]
    DEFAULT_CSS = """
    AblationTree { height: 1fr; padding: 0 0; background: $surface; }
    """

    @dataclass
    class ExpandWanted(Message):
        tree: AblationTree
        ref: NodeRef

    def __init__(self, **kwargs) -> None:
        super().__init__("no tree yet", **kwargs)
        self.show_root = True
        self.guide_depth = 3
        self.is_ablated: Callable[[Node], bool] = lambda node: False
        self.exact: dict[Path, dict[int, float]] = {}
        self.title: Text | None = None
        self.agreement: dict[Path, TreeAgreement] = {}

    # ---- filling --------------------------------------------------------------------
    def show(self, root: Node, title: Text | None = None, cursor: Path = ()) -> None:
        """Draw a whole tree (up or down) from its root, keeping expanded nodes open;
        `title` replaces the root's own label; the cursor goes to `cursor` if it exists."""
        self.clear()
        self.title = title
        self.root.data = NodeRef((), root)
        self._fill(self.root, root)
        self.root.expand()
        self.relabel()
        target = self.find(cursor) or self.root
        self.call_after_refresh(self.move_cursor, target, animate=False)  # lines exist after a refresh

    def _fill(self, tree_node: TreeNode[NodeRef], node: Node) -> None:
        tree_node.remove_children()
        path = tree_node.data.path
        for i, child in enumerate(node.children or []):
            sub = tree_node.add("", data=NodeRef(path + (i,), child), allow_expand=expandable(child))
            if child.children:
                self._fill(sub, child)
                sub.expand()

    def set_children(self, path: Path, node: Node) -> None:
        """The engine answered for the node at `path` (the node already holds the children)."""
        tree_node = self.find(path)
        if tree_node is None or tree_node.data.node is not node:
            return  # the tree was redrawn meanwhile
        self._fill(tree_node, node)
        tree_node.allow_expand = bool(node.children)
        if node.children:
            tree_node.expand()
        self.relabel(tree_node)

    def find(self, path: Path) -> TreeNode[NodeRef] | None:
        tree_node = self.root
        for i in path:
            children = [c for c in tree_node.children if c.data is not None]
            if not 0 <= i < len(children):
                return None
            tree_node = children[i]
        return tree_node

    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeRef]) -> None:
        ref = event.node.data
        if ref is None or ref.node.children is not None:
            return
        if not event.node.children:
            event.node.add_leaf(Text("computing…", style="dim italic"))
        self.post_message(self.ExpandWanted(self, ref))

    # ---- labels ---------------------------------------------------------------------
    def relabel(self, start: Optional[TreeNode[NodeRef]] = None) -> None:
        """Redraw the labels (after an ablation, a check or a method change)."""
        stack = [start or self.root]
        while stack:
            tree_node = stack.pop()
            ref = tree_node.data
            if ref is not None:
                tree_node.set_label(self._label(tree_node, ref))
            stack.extend(tree_node.children)

    def _label(self, tree_node: TreeNode[NodeRef], ref: NodeRef) -> Text:
        if not ref.path and self.title is not None:
            return self._with_agreement(self.title.copy(), ref)
        siblings = tree_node.parent.children if tree_node.parent is not None else [tree_node]
        biggest = max((abs(s.data.node.effect) for s in siblings if s.data is not None), default=0.0)
        n = ref.node.node
        exact = self.exact.get(ref.path[:-1], {}).get(n.feature) if ref.path and n.kind == "feature" else None
        text = node_label(ref.node, biggest, ablated=n.kind == "feature" and self.is_ablated(ref.node), exact=exact)
        return self._with_agreement(text, ref)

    def _with_agreement(self, text: Text, ref: NodeRef) -> Text:
        if (agree := self.agreement.get(ref.path)) is not None:
            text.append(f"  ✓ n={agree.n} r={agree.pearson:.3f} ρ={agree.spearman:.3f}", style="bold yellow")
        return text

    @property
    def selected(self) -> NodeRef | None:
        node = self.cursor_node
        return node.data if node is not None else None
