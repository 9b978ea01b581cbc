"""A feature's neighbourhood in its co-activation graph as a Textual Tree: the feature
at the root, its strongest neighbours below it (`graph.node`), and under each
neighbour its own neighbours, asked for when the row is first opened.

Notes
- Rows are filled lazily: opening a row that has not been filled posts
  `NeighboursWanted` (the pane asks the controller, which answers from its cache
  or the engine) and shows `loading…` until `fill` is called with the reply.
- A neighbour already on the path to the root (the graph has cycles: a feature's
  neighbour lists it back) is marked `↺` and cannot be opened, so cycles show
  without a tree that never ends.
- Leaves get two blank cells where an expandable row has its ▶, so the numbers
  line up at a given depth (as in the Circuit pane's tree).
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from engine.protocol import GraphNeighbour, GraphNode
from tui.graph_text import neighbour_label, root_label


@dataclass
class Row:
    """What a tree row stands for."""

    feature: int
    neighbour: GraphNeighbour | None = None  # None at the root
    on_path: bool = False  # already an ancestor: a cycle, not opened
    filled: bool = False  # its neighbours are below it


class NeighbourTree(Tree[Row]):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
        Binding("enter,space", "toggle_node", "Open", id="graph_tree.toggle", show=False,
                tooltip="Open or close the row: the neighbour's own neighbours"),
        Binding("right", "open_row", "Open", show=False, tooltip="Open the row"),
        Binding("left", "close_row", "Close", show=False, tooltip="Close the row, or go to its parent"),
    ]
    DEFAULT_CSS = """
    NeighbourTree { height: 1fr; background: $surface; }
    """

    @dataclass
    class NeighboursWanted(Message):
        """A row was opened for the first time: its feature's neighbours are needed."""

        tree: NeighbourTree
        feature: int

    def __init__(self, **kwargs) -> None:
        super().__init__(Text("no feature yet: type its number above, Enter", style="dim"), **kwargs)
        self.root.allow_expand = False
        self.guide_depth = 3
        self.width_ = 4  # digits of the widest feature number, so the weights line up
        self.path: str | None = None  # the SAE the tree is of

    # ---- filling ------------------------------------------------------------------------
    def show(self, path: str, node: GraphNode, d_sae: int | None = None) -> None:
        """Start again from `node` (a `graph.node` reply) at the root."""
        self.path = path
        if d_sae:
            self.width_ = len(str(d_sae - 1))
        self.clear()
        self.root.set_label(root_label(node))
        self.root.data = Row(node.feature)
        self.root.allow_expand = True
        self._add_neighbours(self.root, node)
        self.root.expand()
        self.call_after_refresh(self.move_cursor, self.root, animate=False)

    def _add_neighbours(self, tree_node: TreeNode[Row], node: GraphNode) -> None:
        tree_node.remove_children()
        ancestors = self.features_to_root(tree_node)
        for n in node.neighbours:
            on_path = n.feature in ancestors
            tree_node.add(neighbour_label(n, self.width_, on_path), data=Row(n.feature, n, on_path),
                          allow_expand=not on_path and n.degree > 1)  # degree 1: its only neighbour is the parent
        if not node.neighbours:
            tree_node.add_leaf(Text("no neighbours under the edge rule", style="dim"))
        tree_node.data.filled = True

    def fill(self, feature: int, node: GraphNode | None) -> None:
        """The neighbours of `feature` arrived (None: they could not be had): fill every
        open row of that feature that waits for them."""
        for tree_node in self._waiting(feature):
            if node is None:
                tree_node.remove_children()
                tree_node.collapse()  # opening it again asks again
            else:
                self._add_neighbours(tree_node, node)

    def _waiting(self, feature: int) -> list[TreeNode[Row]]:
        out, stack = [], [self.root]
        while stack:
            tree_node = stack.pop()
            row = tree_node.data
            if row is not None and row.feature == feature and not row.filled and tree_node.children:
                out.append(tree_node)
            stack.extend(tree_node.children)
        return out

    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[Row]) -> None:
        row = event.node.data
        if row is None or row.filled or row.on_path or event.node.children:
            return
        event.node.add_leaf(Text("loading…", style="dim"))
        self.post_message(self.NeighboursWanted(self, row.feature))

    def features_to_root(self, tree_node: TreeNode[Row] | None) -> set[int]:
        """The features of `tree_node` and its ancestors."""
        out = set()
        while tree_node is not None:
            if tree_node.data is not None:
                out.add(tree_node.data.feature)
            tree_node = tree_node.parent
        return out

    # ---- keys ---------------------------------------------------------------------------
    def action_open_row(self) -> None:
        node = self.cursor_node
        if node is not None and node.allow_expand and not node.is_expanded:
            node.expand()

    def action_close_row(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.is_expanded and node.parent is not None:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent, animate=False)

    # ---- drawing ------------------------------------------------------------------------
    def render_label(self, node: TreeNode[Row], base_style: Style, style: Style) -> Text:
        text = super().render_label(node, base_style, style)
        if not node.allow_expand and node.parent is not None:
            text = Text.assemble(("  ", base_style), text)  # where an expandable row has its ▶
        return text

    @property
    def selected(self) -> Row | None:
        node = self.cursor_node
        return node.data if node is not None else None
