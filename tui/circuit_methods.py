"""The Circuit pane's search methods and the curves it keeps of each: the cycle `m`
steps through, what a method's threshold is called, and the last swept curves of
every method on the task and sites searched, so the plot can draw them together.

Notes
- The mask method's `threshold` is its sparsity weight lambda (larger: a smaller
  circuit, like a higher threshold), so stepping along a sweep is the same for all
  three; only the word differs.
- `errors` means the same for all three when curves are compared: error terms in
  the circuit (for the mask: kept clean) or out of it (ablated to their means).
- Curves belong to one task and one site list: a search on another task or other
  sites starts the book afresh, so the plot never compares circuits of different
  problems. A failed search changes nothing; a cancelled one keeps its points.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.protocol import CurvePoint

METHODS = ("attribution", "ig", "mask")
LABELS = {"attribution": "attribution", "ig": "IG", "mask": "mask"}  # as the plot's legend names them


def next_method(method: str) -> str:
    """The method after `method` in the cycle attribution → ig → mask → attribution."""
    i = METHODS.index(method) if method in METHODS else -1
    return METHODS[(i + 1) % len(METHODS)]


def threshold_word(method: str) -> str:
    """What the method's `threshold` is: the mask's sparsity weight, or an effect size."""
    return "lambda" if method == "mask" else "threshold"


@dataclass
class MethodCurves:
    curve: list[CurvePoint]
    """With error nodes (mask: error terms clean)."""
    curve_features: list[CurvePoint]
    """Feature nodes only (mask: error terms at their means)."""
    complete: bool = True

    def shown(self, errors: bool) -> list[CurvePoint]:
        return self.curve if errors else self.curve_features


class CurveBook:
    """The last curves of each method for one (task, sites)."""

    def __init__(self) -> None:
        self.key: tuple[str, tuple[str, ...]] | None = None
        self.by_method: dict[str, MethodCurves] = {}

    def put(self, task: str, paths: list[str], method: str, curves: MethodCurves) -> None:
        key = (task, tuple(paths))
        if key != self.key:  # another problem: the other methods' curves no longer compare
            self.key, self.by_method = key, {}
        self.by_method[method] = curves

    def for_errors(self, errors: bool) -> dict[str, list[CurvePoint]]:
        """Each method's curve for the errors setting, in the cycle's order."""
        return {m: self.by_method[m].shown(errors) for m in METHODS if m in self.by_method}
