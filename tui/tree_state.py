"""What the Ablation pane knows about one opened tree, as plain data (no Textual):
the `tree.open` result, the down tree of the ablated features, the checks, and
the helpers that find nodes again after a rebuild and export it all as JSON.

Notes
- Nodes are the engine's `TreeNode` structs, filled in place as `tree.expand` replies arrive;
  a node's path is its child indices from the root, as `tree.expand` takes it.
- After a rebuild (another method or mode) indices can change, so open nodes are
  remembered by chains of `node_key`s (what a node stands for) and found again.
"""

from __future__ import annotations

from dataclasses import KW_ONLY, dataclass, field

import msgspec

from engine.protocol import PredictionChange, TreeAgreement, TreeNode, TreeOpened

NodePath = tuple[int, ...]
"""A node's child indices from the root, as `tree.expand` takes it."""


@dataclass
class TreeState:
    """One opened tree: what `tree.open` said, and what the user did since."""

    name: str
    """The tree's name in the engine."""
    prompt: str
    paths: list[str]
    """The SAE folders as sent: upstream, downstream (site index -> folder)."""
    opened: TreeOpened
    """The `tree.open` result: tokens, position, predicted, sites, root."""
    method: str
    mode: str
    generation: int
    """Which rebuild of the pane this is; late replies for older ones are dropped."""
    _: KW_ONLY
    down: TreeNode | None = None
    """The down tree (`tree.ablate`'s root) while features are ablated."""
    ablated: tuple[int, tuple[int, ...]] | None = None
    """(site index, features) ablated together."""
    engine: int | None = None
    """The pid of the engine holding the tree (a restarted engine has lost it)."""
    checks: dict[NodePath, TreeAgreement] = field(default_factory=dict)
    """`tree.check` results by the checked node's path."""

    @property
    def up(self) -> TreeNode:
        return self.opened.root


def node_key(node: TreeNode) -> tuple:
    """What a node stands for, whatever its index: (kind, site, feature, token)."""
    n = node.node
    return (n.kind, n.site_index, n.feature, n.token_id)


def open_chains(root: TreeNode) -> list[tuple]:
    """Key chains of the expanded nodes below the root, parents first."""
    out, queue = [], [((), root)]
    while queue:
        keys, node = queue.pop(0)
        for child in node.children or []:
            if child.children is not None:
                chain = keys + (node_key(child),)
                out.append(chain)
                queue.append((chain, child))
    return out


def chain_of(root: TreeNode, path: NodePath) -> tuple:
    """The key chain of the node at `path`."""
    chain, node = (), root
    for i in path:
        node = node.children[i]
        chain += (node_key(node),)
    return chain


def find_chain(root: TreeNode, chain: tuple) -> tuple[list[int], TreeNode] | None:
    """The path and node that a key chain names in this tree, or None if it is gone."""
    node, path = root, []
    for key in chain:
        index = next((i for i, c in enumerate(node.children or []) if node_key(c) == key), None)
        if index is None:
            return None
        node, path = node.children[index], path + [index]
    return path, node


def expandable(node: TreeNode) -> bool:
    """Whether a node can have children: the root, the down tree's root, a feature with
    an earlier site (up) or anything after it (down); never an error term or a logit."""
    if node.children is not None:
        return len(node.children) > 0
    n = node.node
    if n.kind in ("metric", "ablation"):
        return True
    return n.kind == "feature" and (n.direction == "down" or (n.site_index or 0) > 0)


def export(state: TreeState, prediction: PredictionChange | None = None) -> dict:
    """Everything the pane shows, for a JSON file."""
    o = state.opened
    return msgspec.to_builtins({
        "prompt": state.prompt, "tokens": o.tokens, "position": o.position, "predicted": o.predicted,
        "sites": o.sites, "method": state.method, "mode": state.mode, "up": state.up,
        "ablated": ({"site": state.ablated[0], "features": list(state.ablated[1])} if state.ablated else None),
        "down": state.down, "prediction": prediction, "checks": [{**msgspec.to_builtins(c), "path": list(p)} for p, c in state.checks.items()]})
