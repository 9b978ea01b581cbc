"""Handlers for feature circuits: find (effects, sweep, the circuit), re-threshold, verify exactly."""

from __future__ import annotations

from engine.errors import UserError
from engine.handlers.features import open_view
from engine.jobs import Job
from engine.protocol import CircuitFound, CircuitVerified
from engine.workspace import Workspace, tensor_bytes


def builder_bytes(builder) -> int:
    """What a `CircuitBuilder` holds beyond its views: the sites' states and gradients."""
    tensors = [builder.task.clean, builder.task.patch, *builder.feature_grads, *builder.raw.features]
    for states in (builder.clean, builder.patch, builder.means):
        tensors += [t for s in states for t in (s.f, s.e)]
    return tensor_bytes(t for t in tensors if t is not None) + builder.edges.nbytes()


def circuit_find(state: Workspace, params, ctx: Job) -> CircuitFound:
    from engine.circuits.discover import CircuitBuilder, find_circuit
    from engine.circuits.tasks import load_task

    lm = state.require_model()
    if not params.saes:
        raise UserError("a circuit needs at least one SAE site")
    task = load_task(params.task, lm)  # checked before any SAE opens
    view_keys: list = []

    def views():
        vs = [open_view(state, p, context=params.context) for p in params.saes]
        view_keys[:] = [k for k, v in state.open_items() if any(v is w for w in vs)]
        return vs

    def rebuild():
        builder = CircuitBuilder(lm, views(), params.saes, task, params)
        builder.curve, builder.curve_features, builder.complete = state.circuit_sweeps[params.circuit]
        return builder

    builder, found = find_circuit(lm, views(), params.saes, task, params, ctx)
    state.open(("circuit", params.circuit), rebuild, builder_bytes, depends=view_keys,
               what=f"the circuit {params.circuit!r}", value=builder)
    state.circuit_sweeps[params.circuit] = (builder.curve, builder.curve_features, builder.complete)
    return found


def _builder(state: Workspace, name: str):
    if name not in state.circuit_sweeps:
        raise UserError(f"no open circuit named {name!r}: send circuit.find first")
    return state.get(("circuit", name))


def circuit_threshold(state: Workspace, params, ctx: Job) -> CircuitFound:
    builder = _builder(state, params.circuit)
    errors = builder.params.errors if params.errors is None else params.errors
    return builder.circuit(params.threshold, errors, params.edge_threshold, ctx)


def circuit_verify(state: Workspace, params, ctx: Job) -> CircuitVerified:
    if not params.nodes and not params.edges:
        raise UserError("name at least one node or edge to verify")
    return _builder(state, params.circuit).verify(params.nodes, params.edges, ctx)
