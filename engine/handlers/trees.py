"""Handlers for ablation trees: open, expand, check exact against attribution, ablate."""

from __future__ import annotations

import msgspec

from engine.errors import UserError
from engine.handlers.features import open_view
from engine.jobs import Job
from engine.saes import check_features
from engine.protocol import PredictionChange, TreeAblated, TreeAgreement, TreeChildren, TreeNode, TreeOpened
from engine.workspace import Workspace, builder_bytes


def tree_open(state: Workspace, params, ctx: Job) -> TreeOpened:
    from engine.tree import open_tree

    lm = state.require_model()
    paths = [params.upstream, params.downstream]
    view_keys: list = []

    def build():
        views = [open_view(state, p, context=params.context) for p in paths]
        view_keys[:] = [k for k, v in state.open_items() if any(v is w for w in views)]
        return open_tree(lm, views, params.prompt, params.position, params.mode, params.method, params.top)

    tb = build()
    root = tb.root_up(depth=1, job=ctx)
    state.open(("tree", params.tree), build, builder_bytes, depends=view_keys, what=f"the tree {params.tree!r}",
               value=tb)
    state.tree_roots[params.tree] = root
    return msgspec.convert({"tree": params.tree, "tokens": lm.model.to_str_tokens(tb.tokens[0])[1:],
                            "position": tb.position - 1, "predicted": lm.tokenizer.decode([tb.metric.token]),
                            "sites": [{"name": s.name, "hook": s.hook, "path": p} for s, p in zip(tb.s.sites, paths)],
                            "root": root}, TreeOpened)


def _tree(state: Workspace, name: str):
    """The builder of an open tree (rebuilt if it was evicted) and its root."""
    if name not in state.tree_roots:
        raise UserError(f"no open tree named {name!r}: send tree.open first")
    return state.get(("tree", name)), state.tree_roots[name]


def _tree_node(state: Workspace, name: str, path: list[int]):
    tb, node = _tree(state, name)
    for i in path:
        children = node.get("children") or []
        if not 0 <= i < len(children):
            raise UserError(f"no node at path {path}")
        node = children[i]
    return tb, node


def tree_expand(state: Workspace, params, ctx: Job) -> TreeChildren:
    tb, node = _tree_node(state, params.tree, params.path)
    if node["node"].get("direction") == "down":
        children = tb.expand_down(node, job=ctx)
    else:
        children = tb.expand_up(node, params.method, job=ctx)
    return msgspec.convert({"path": params.path, "children": children}, TreeChildren)


def tree_check(state: Workspace, params, ctx: Job) -> TreeAgreement:
    """Exact against attribution for the children of a node (the metric or a feature)."""
    from engine.ablate import Target

    tb, node = _tree_node(state, params.tree, params.path)
    n = node["node"]
    if n["kind"] == "metric":
        target, site = tb.metric, len(tb.s.sites) - 1
    elif n["kind"] == "feature" and n["site_index"] > 0:
        target = Target("feature", tb.position, site=n["site_index"], feature=n["feature"])
        site = n["site_index"] - 1
    else:
        raise UserError("only the root and downstream features have upstream children to check")
    return msgspec.convert({"path": params.path, **tb.agreement(target, site, job=ctx)}, TreeAgreement)


def tree_ablate(state: Workspace, params, ctx: Job) -> TreeAblated:
    tb, _ = _tree(state, params.tree)
    if not 0 <= params.site < len(tb.s.sites):
        raise UserError(f"site {params.site} does not exist")
    check_features(tb.s.sites[params.site].sae.cfg.d_sae, params.features, f"the {tb.s.sites[params.site].name} SAE")
    root = tb.root_down(params.site, params.features, mode=params.mode, job=ctx)
    return TreeAblated(root=msgspec.convert(root, TreeNode),
                       prediction=msgspec.convert(_prediction_change(tb, params, ctx), PredictionChange))


def _prediction_change(tb, params, job: Job) -> dict:
    """The prediction at the tree's position before and after the ablations: one more
    forward pass (the builder keeps the clean one)."""
    from engine.ablate import Intervention
    from engine.predict import prediction_change

    ivs = [Intervention(params.site, f, params.mode) for f in params.features]
    after = tb.s.run(tb.tokens, ivs, upto=tb.position, job=job)
    decode = tb.s.lm.tokenizer.decode
    return prediction_change(tb.clean.logits[tb.position], after.logits[tb.position], lambda t: decode([t]))
