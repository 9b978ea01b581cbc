"""The circuit as a Textual Tree: the metric at the root, the nodes that feed it below,
each node's upstream nodes below it (rows from `tui.circuit_layout`), filled when a
node is opened.

Notes
- Redrawn whole when the circuit changes (another threshold, error nodes in or
  out); the rows that were open, and the cursor, are found again by what they are
  (the chain of node ids from the root), so stepping the threshold keeps the
  user's place while nodes come and go around it.
- Leaves get two blank cells where an expandable row has its ▶, so every label
  starts in the same column at a given depth and the numbers line up.
- The widget keeps no state beyond what it draws: the controller owns the
  circuit and the exact effects, and the pane passes them to `show`.
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual.binding import Binding
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from tui.circuit_layout import CircuitLayout, Columns, Row, group_label, metric_label, node_label

Chain = tuple[tuple[str, str], ...]


def row_key(row: Row) -> tuple[str, str]:
    return (row.kind, row.node.id if row.node is not None else row.site)


class CircuitTree(Tree[Row]):
    BINDINGS = [
        Binding("j", "cursor_down", "Down", show=False, group=Binding.Group("Move down / up")),
        Binding("k", "cursor_up", "Up", show=False, group=Binding.Group("Move down / up")),
        Binding("enter,space", "toggle_node", "Open", id="circuit_tree.toggle", show=False,
                tooltip="Open or close the node: the upstream nodes that feed it"),
    ]
    DEFAULT_CSS = """
    CircuitTree { height: 1fr; background: $surface; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(Text("no circuit yet", style="dim"), **kwargs)
        self.root.allow_expand = False  # nothing under it until a circuit is shown
        self.guide_depth = 3
        self.layout_: CircuitLayout | None = None
        self.columns: Columns | None = None
        self.complete = True
        self.exact_nodes: dict[str, float] = {}
        self.exact_edges: dict[tuple[str, str], float] = {}

    # ---- filling --------------------------------------------------------------------
    def show(self, layout: CircuitLayout, complete: bool = True) -> None:
        """Draw a circuit, keeping the rows that were open and the cursor where they still are."""
        opened, cursor = self._open_chains(), self.chain_of(self.cursor_node)
        self.layout_, self.complete = layout, complete
        self.columns = Columns.of(layout, self.guide_depth)
        self.clear()
        self.root.data = layout.root
        self.root.allow_expand = True
        self._fill(self.root)
        self.root.expand()
        for chain in sorted(opened, key=len):
            if (node := self.find(chain)) is not None and node.allow_expand:
                self._fill(node)
                node.expand()
        self.relabel()
        target = self._nearest(cursor)
        self.call_after_refresh(self.move_cursor, target, animate=False)  # lines exist after a refresh

    def _fill(self, tree_node: TreeNode[Row]) -> None:
        if tree_node.children or self.layout_ is None:
            return
        for row in self.layout_.children(tree_node.data):
            tree_node.add(self._label(row, len(self.chain_of(tree_node)) + 1), data=row,
                          allow_expand=self.layout_.has_children(row))

    def _on_tree_node_expanded(self, event: Tree.NodeExpanded[Row]) -> None:
        if event.node.data is not None and not event.node.children:
            self._fill(event.node)

    # ---- finding rows again -----------------------------------------------------------
    def chain_of(self, tree_node: TreeNode[Row] | None) -> Chain:
        """The keys of the rows from the root's child down to `tree_node`."""
        chain: list[tuple[str, str]] = []
        while tree_node is not None and tree_node.parent is not None:
            chain.append(row_key(tree_node.data))
            tree_node = tree_node.parent
        return tuple(reversed(chain))

    def find(self, chain: Chain) -> TreeNode[Row] | None:
        node = self.root
        for key in chain:
            if not node.children:
                self._fill(node)
            node = next((c for c in node.children if c.data is not None and row_key(c.data) == key), None)
            if node is None:
                return None
        return node

    def _nearest(self, chain: Chain) -> TreeNode[Row]:
        """The row the chain names, or the deepest of its ancestors still there."""
        node = self.root
        for key in chain:
            child = next((c for c in node.children if c.data is not None and row_key(c.data) == key), None)
            if child is None or not node.is_expanded:
                break
            node = child
        return node

    def _open_chains(self) -> list[Chain]:
        out, stack = [], list(self.root.children)
        while stack:
            node = stack.pop()
            if node.is_expanded:
                out.append(self.chain_of(node))
                stack.extend(node.children)
        return out

    # ---- labels ---------------------------------------------------------------------
    def relabel(self) -> None:
        """Redraw every label (after a verification)."""
        stack = [(self.root, 0)]
        while stack:
            tree_node, depth = stack.pop()
            if tree_node.data is not None:
                tree_node.set_label(self._label(tree_node.data, depth))
            stack.extend((c, depth + 1) for c in tree_node.children)

    def _label(self, row: Row, depth: int) -> Text:
        if row.kind == "metric":
            return metric_label(self.layout_.found, self.complete)
        if row.kind == "unconnected":
            return group_label(row)
        edge = self.exact_edges.get((row.node.id, row.parent)) if row.parent else None
        return node_label(row, depth, self.columns, self.exact_nodes.get(row.node.id), edge)

    def render_label(self, node: TreeNode[Row], base_style: Style, style: Style) -> Text:
        text = super().render_label(node, base_style, style)
        if not node.allow_expand and node.parent is not None:
            text = Text.assemble(("  ", base_style), text)  # where an expandable row has its ▶
        return text

    @property
    def selected(self) -> Row | None:
        node = self.cursor_node
        return node.data if node is not None else None
