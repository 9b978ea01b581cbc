"""The Circuit pane's controller: its engine requests (`circuit.find`,
`circuit.threshold`, `circuit.verify`) and what it knows (the circuit shown, its
swept curves, the threshold asked for, the exact effects verified), as plain
asyncio. It posts typed messages; the pane (`tui/widgets/circuit_pane.py`) draws them.

Notes
- A search is a long job: its progress events become `CircuitStatus` lines, and
  `cancel` asks the engine to stop it. A cancelled sweep still replies, with
  `complete=False` and the points it finished, and that circuit is shown, marked
  partial; only a search stopped before any point ends without one.
- Each search names a new circuit in the engine, so the circuit shown stays
  usable (threshold, verify) while the next one is searched.
- Threshold steps are taken from the threshold last asked for, not the one last
  shown, so three quick presses step three points; a newer threshold request
  cancels an older one (exclusive task groups, as in the Ablation controller).
- `circuit.threshold` may answer without the curves: the search's curves are kept.
- Exact effects are the node's (or edge's) own, whatever the threshold, so they
  stay beside the estimates while the threshold moves, until the next search.
- A circuit lives in the engine that found it: after an engine restart the pane
  says so instead of sending requests that would fail.
- Three methods (`tui.circuit_methods`): attribution, integrated gradients, and
  the mask (a binary mask over (position, latent) trained per lambda; its
  `threshold` is that lambda). Each search's curves go into `curves`, a book of
  the last ones of every method on that task and those sites, which the plot
  draws side by side. `mask_steps` (None: the engine's default) is sent with mask
  searches only.
- Another lambda than the sweep's may train a new mask in the engine (the errors
  toggled after a cancelled sweep, say): threshold requests show their progress,
  and `cancel` stops them as it stops a search.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from dataclasses import dataclass, field

from textual.message import Message

from engine.protocol import CircuitFound, CircuitNode, CurvePoint, VerifiedEdge, VerifiedNode
from tui.circuit_layout import node_name, signed, step_point
from tui.circuit_methods import METHODS, CurveBook, MethodCurves, next_method, threshold_word
from tui.client import EngineError, JobCancelled
from tui.controllers.requests import RequestTasks
from tui.link import EngineLink
from tui.sae_paths import short_name
from tui.sae_session import SaeSession

_circuit_names = itertools.count(1)


@dataclass
class CircuitShown(Message):
    """The circuit (or what is verified of it) changed: redraw; `note` to show."""

    note: str = ""
    new: bool = False
    """A search's result (not another threshold of the circuit shown)."""


@dataclass
class CircuitStatus(Message):
    """A line for the pane's info row: progress, or an error (shown in full)."""

    text: str
    error: bool = False


@dataclass
class CircuitState:
    """One circuit found: what the engine said, and what the user did since."""

    name: str
    """The circuit's name in the engine."""
    task: str
    paths: list[str]
    """The SAE folders as sent, upstream first (site index -> folder)."""
    found: CircuitFound
    """The latest `circuit.find` or `circuit.threshold` result."""
    curve: list[CurvePoint]
    curve_features: list[CurvePoint]
    complete: bool
    engine: int | None
    verified_nodes: dict[str, VerifiedNode] = field(default_factory=dict)
    verified_edges: dict[tuple[str, str], VerifiedEdge] = field(default_factory=dict)

    @property
    def errors(self) -> bool:
        return self.found.errors

    @property
    def method(self) -> str:
        return self.found.method

    def curve_shown(self) -> list[CurvePoint]:
        """The curve the circuit shown is on (with error nodes, or features only)."""
        return self.curve if self.errors else self.curve_features


class CircuitController:
    def __init__(self, link: EngineLink, saes: SaeSession, post) -> None:
        self.link, self.saes, self.post = link, saes, post
        self.state: CircuitState | None = None
        self.method = "attribution"
        self.points: int | None = None  # the sweep's circuits and its largest; None: the engine's defaults
        self.max_nodes: int | None = None
        self.mask_steps: int | None = None  # Adam steps per mask; None: the engine's default
        self.curves = CurveBook()
        self.searching = False
        self.thresholding = False  # a threshold request under way (a mask's may train)
        self._asks = 0  # threshold requests sent: only the latest one's end clears `thresholding`
        self.generation = 0
        self.wanted: tuple[float, bool] | None = None  # (threshold, errors) last asked for
        self.requests = RequestTasks("circuit", link.log, lambda text: post(CircuitStatus(text, error=True)))
        self._find_task: asyncio.Task | None = None

    # ---- tasks --------------------------------------------------------------------------
    def _spawn(self, group: str, coro, exclusive: bool = True) -> asyncio.Task:
        return self.requests.spawn(group, coro, exclusive)

    async def idle(self) -> None:
        """Wait for every request under way (tests)."""
        await self.requests.idle()

    def close(self) -> None:
        self.requests.close()

    def switch_method(self) -> str:
        """The next method of the cycle, for the next search (the circuit shown stays)."""
        self.method = next_method(self.method)
        return self.method

    def curves_shown(self) -> dict[str, list[CurvePoint]]:
        """Each method's curve for the circuit shown's errors setting, on its task and
        sites (the circuit shown's own curve always among them), in the cycle's order."""
        s = self.state
        if s is None:
            return {}
        curves = self.curves.for_errors(s.errors) if self.curves.key == (s.task, tuple(s.paths)) else {}
        curves[s.method] = s.curve_shown()
        return {m: curves[m] for m in METHODS if m in curves}

    # ---- searching ------------------------------------------------------------------------
    def find(self, task: str, paths: list[str]) -> asyncio.Task | None:
        """Search a circuit for `task` (a name or a path, as sent) through `paths`."""
        if not task.strip():
            self.post(CircuitStatus("Type a task first: a shipped task's name or a JSON-lines file.", error=True))
            return None
        if not paths:
            self.post(CircuitStatus("Give the SAE sites first (s): folders, upstream first.", error=True))
            return None
        self.generation += 1
        self.searching = True
        self.post(CircuitStatus(f"searching a circuit for {task} ({self.method})…"))
        self._find_task = self._spawn("find", self._find(self.generation, task, list(paths), self.method))
        return self._find_task

    async def _find(self, generation: int, task: str, paths: list[str], method: str) -> None:
        def on_event(event) -> None:
            if event.kind == "progress" and generation == self.generation:
                self.post(CircuitStatus(f"searching ({method}): " + progress_text(event.data)))

        try:
            for path in paths:  # opened (and indexed) first: descriptions come from the index
                await self.saes.open(path, on_progress=lambda f, p=path: self.post(
                    CircuitStatus(f"indexing {short_name(p)}: {f:.0%}")))
            name = f"tui-{os.getpid()}-circuit-{next(_circuit_names)}"
            params = {"task": task, "saes": paths, "circuit": name, "method": method}
            if self.points is not None:
                params["points"] = self.points
            if self.max_nodes is not None:
                params["max_nodes"] = self.max_nodes
            if method == "mask" and self.mask_steps is not None:
                params["mask_steps"] = self.mask_steps
            found = await self.link.run("circuit.find", params, needs_model=True, on_event=on_event)
        except JobCancelled:
            if generation == self.generation:
                self.post(CircuitStatus("The search was cancelled before it found a circuit."))
            return
        except EngineError as e:
            if generation == self.generation:
                self.link.log(f"circuit: {e}")
                self.post(CircuitStatus(str(e), error=True))
            return
        finally:
            if generation == self.generation:
                self.searching = False
        if generation != self.generation:
            return
        self.state = CircuitState(name, task, paths, found, list(found.curve), list(found.curve_features),
                                  found.complete, self.link.engine_pid)
        self.curves.put(task, paths, found.method,
                        MethodCurves(list(found.curve), list(found.curve_features), found.complete))
        self.wanted = (found.figures.threshold, found.errors)
        note = "" if found.complete else \
            f"The search was cancelled: {len(found.curve)} points of the sweep, the circuit shown is partial."
        self.post(CircuitShown(note, new=True))

    def cancel(self) -> bool:
        """Stop the search under way (its partial sweep is still shown), or a threshold
        request (a mask in training); False if neither runs."""
        if self.searching:
            self.post(CircuitStatus("cancelling the search…"))
            self._spawn("cancel", self._cancel())
            return True
        if self.thresholding:
            self.post(CircuitStatus("cancelling…"))
            self._spawn("cancel", self._cancel("circuit.threshold"))
            return True
        return False

    async def _cancel(self, method: str = "circuit.find") -> None:
        try:
            n = await self.link.cancel_jobs(method)
        except EngineError as e:
            self.post(CircuitStatus(str(e), error=True))
            return
        if method != "circuit.find":
            return
        if not n and self._find_task is not None and not self._find_task.done():
            self._find_task.cancel()  # still opening the SAEs: nothing runs in the engine yet
            self.searching = False
            self.post(CircuitStatus("The search was cancelled before it found a circuit."))

    # ---- the threshold ----------------------------------------------------------------------
    def _lost(self) -> bool:
        s = self.state
        if s is None:
            return True
        if s.engine != self.link.engine_pid:
            self.post(CircuitStatus("The engine restarted and the circuit went with it: f searches again.",
                                    error=True))
            return True
        return False

    def step(self, step: int) -> CurvePoint | None:
        """The circuit at the next swept point: `step` > 0 a higher threshold (fewer
        nodes), < 0 a lower one; None (and a note) past either end of the curve."""
        if self._lost():
            return None
        threshold, errors = self.wanted
        curve = self.state.curve if errors else self.state.curve_features
        if not curve:
            self.post(CircuitStatus("No sweep to step along: search again (f)."))
            return None
        point = step_point(curve, threshold, step)
        if point is None:
            self.post(CircuitStatus("This is the " + ("smallest" if step > 0 else "largest") +
                                    " circuit of the sweep."))
            return None
        self._ask(point.threshold, errors)
        return point

    def toggle_errors(self) -> bool | None:
        """Error nodes in or out of the circuit, at the same threshold; the new setting."""
        if self._lost():
            return None
        threshold, errors = self.wanted
        self._ask(threshold, not errors)
        return not errors

    def _ask(self, threshold: float, errors: bool) -> None:
        self.wanted = (threshold, errors)
        what = f"the circuit at {threshold_word(self.state.method)} {threshold:.3g}" + \
            ("" if errors else ", features only")
        self.post(CircuitStatus(what + "…"))
        self.thresholding = True
        self._asks += 1
        self._spawn("threshold", self._threshold(self.state, threshold, errors, what, self._asks))

    async def _threshold(self, s: CircuitState, threshold: float, errors: bool, what: str, ask: int) -> None:
        def on_event(event) -> None:  # a mask not trained yet trains now: its progress
            if event.kind == "progress" and s is self.state and ask == self._asks:
                self.post(CircuitStatus(f"{what}: {progress_text(event.data)} (c cancels)"))

        try:
            found = await self.link.run("circuit.threshold",
                                        {"circuit": s.name, "threshold": threshold, "errors": errors},
                                        on_event=on_event)
        except JobCancelled:
            if s is self.state and ask == self._asks:
                self.wanted = (s.found.figures.threshold, s.found.errors)  # back to the circuit shown
                self.post(CircuitStatus("Cancelled: the circuit shown stays."))
            return
        except EngineError as e:
            if s is self.state:
                self.post(CircuitStatus(str(e), error=True))
            return
        finally:
            if ask == self._asks:
                self.thresholding = False
        if s is self.state:
            s.found = found
            if found.curve:  # a reply without curves keeps the search's
                s.curve, s.curve_features = list(found.curve), list(found.curve_features)
                self.curves.put(s.task, s.paths, found.method,
                                MethodCurves(list(found.curve), list(found.curve_features), found.complete))
            self.post(CircuitShown())

    # ---- verifying --------------------------------------------------------------------------
    def verify(self, node: CircuitNode, parent: str | None = None) -> None:
        """Exact effect of a node, and of its edge into `parent` (a node or the metric)."""
        if self._lost():
            return
        edges = [[node.id, parent]] if parent else []
        self.post(CircuitStatus(f"verifying {node_name(node)} by ablation…"))
        self._spawn("verify", self._verify(self.state, node_name(node), node.id, edges))

    async def _verify(self, s: CircuitState, name: str, node_id: str, edges: list[list[str]]) -> None:
        try:
            result = await self.link.run("circuit.verify", {"circuit": s.name, "nodes": [node_id], "edges": edges},
                                         needs_model=True)
        except EngineError as e:
            if s is self.state:
                self.post(CircuitStatus(str(e), error=True))
            return
        parts = []
        for v in result.nodes:
            s.verified_nodes[v.id] = v
            parts.append(f"{name}: exact {signed(v.exact)} vs ≈{signed(v.estimate)}")
        for v in result.edges:
            s.verified_edges[(v.source, v.target)] = v
            parts.append(f"edge: exact {signed(v.exact)} vs ≈{signed(v.estimate)}")
        if s is self.state:
            self.post(CircuitShown(" · ".join(parts)))


def progress_text(p) -> str:
    """A progress event as `31% · mask lambda 4: loss 0.93, 82 latents, T 4.5` (the
    engine's message says what runs; a mask's carries its loss, size and temperature)."""
    parts = [f"{p.fraction:.0%}" if p.fraction is not None else "", p.message or ""]
    return " · ".join(x for x in parts if x)
