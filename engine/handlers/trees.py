"""Handlers for ablation trees: open, expand, check exact against attribution, ablate."""

from __future__ import annotations

import msgspec

from engine.errors import UserError
from engine.handlers.state import EngineState
from engine.jobs import Job
from engine.protocol import TreeAblated, TreeAgreement, TreeChildren, TreeNode, TreeOpened


def tree_open(state: EngineState, params, ctx: Job) -> TreeOpened:
    from engine.ablate import Splice, Target
    from engine.predict import prompt_tokens
    from engine.tree import TreeBuilder, describer, open_sites, token_position

    lm = state.require_model()
    tokens = prompt_tokens(lm, params.prompt)
    position = token_position(tokens, params.position)
    sites, views = open_sites(lm, [params.upstream, params.downstream], context=params.context)
    splice = Splice(lm, sites)
    clean = splice.run(tokens, upto=position)
    metric = Target("logit", position, token=int(clean.logits[position].argmax()))
    tb = TreeBuilder(splice, tokens, position, metric, describer(views), params.mode, params.method, params.top)
    root = tb.root_up(depth=1, job=ctx)
    state.trees[params.tree] = (tb, root)
    return msgspec.convert({"tree": params.tree, "tokens": lm.model.to_str_tokens(tokens[0])[1:],
                            "position": position - 1, "predicted": lm.tokenizer.decode([metric.token]),
                            "sites": [{"name": s.name, "hook": s.hook, "path": str(v.dir)} for s, v in zip(sites, views)],
                            "root": root}, TreeOpened)


def _tree_node(state: EngineState, name: str, path: list[int]):
    if name not in state.trees:
        raise UserError(f"no open tree named {name!r}: send tree.open first")
    tb, node = state.trees[name]
    for i in path:
        children = node.get("children") or []
        if not 0 <= i < len(children):
            raise UserError(f"no node at path {path}")
        node = children[i]
    return tb, node


def tree_expand(state: EngineState, params, ctx: Job) -> TreeChildren:
    tb, node = _tree_node(state, params.tree, params.path)
    if node["node"].get("direction") == "down":
        children = tb.expand_down(node, job=ctx)
    else:
        children = tb.expand_up(node, params.method, job=ctx)
    return msgspec.convert({"path": params.path, "children": children}, TreeChildren)


def tree_check(state: EngineState, params, ctx: Job) -> TreeAgreement:
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


def tree_ablate(state: EngineState, params, ctx: Job) -> TreeAblated:
    if params.tree not in state.trees:
        raise UserError(f"no open tree named {params.tree!r}: send tree.open first")
    tb, _ = state.trees[params.tree]
    if not 0 <= params.site < len(tb.s.sites):
        raise UserError(f"site {params.site} does not exist")
    d_sae = tb.s.sites[params.site].sae.cfg.d_sae
    for f in params.features:
        if not 0 <= f < d_sae:
            raise UserError(f"feature {f} is out of range (0..{d_sae - 1})")
    return TreeAblated(root=msgspec.convert(tb.root_down(params.site, params.features, mode=params.mode, job=ctx), TreeNode))
