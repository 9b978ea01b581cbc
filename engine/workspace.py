"""The engine's workspace: the loaded model and what is open on it, under a memory budget.

One `Workspace` per engine process, shared by all its connections. It owns the
model and an LRU of open things (SAE views with their indexes, and the heavy
part of ablation trees). Each open thing is registered with a recipe that can
rebuild it; when the bytes held pass the budget the least recently used ones are
dropped, and the next request that names one rebuilds it from its recipe, so
eviction is invisible to the client except in time.

Notes
- Sizes are the bytes of the tensors an item holds itself (deduplicated by
  storage): an SAE's parameters, its index (with its stored example activations), its corpus windows;
  a tree's clean run and site means. The model and the tokenizer are not counted:
  the budget is for what requests open on top of the model.
- A tree holds its SAEs' views, so it depends on them: evicting a view evicts the
  trees built on it (otherwise the view's memory would stay alive through them).
  What the user expanded in a tree (its root and children, plain data) is kept
  apart and survives eviction; only the builder is rebuilt.
- Sizes are measured again after every request (a view grows when its logit
  matrix is first computed), and the budget is enforced then.
- An item larger than the whole budget is refused with a `UserError`.
"""

from __future__ import annotations

import collections
import os
import re
import threading
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Iterable

from engine.errors import UserError

DEFAULT_BUDGET = 4 << 30
BUDGET_ENV = "SAESCOPE_MEMORY_BUDGET"
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes from `4G`, `512M`, `1.5G`, `65536`; a `UserError` for anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", str(text), re.IGNORECASE)
    if not m:
        raise UserError(f"a memory size is a number with an optional K, M, G or T, e.g. 4G; got {text!r}")
    size = int(float(m.group(1)) * _UNITS[m.group(2).upper()])
    if size <= 0:
        raise UserError(f"a memory budget must be positive, got {text!r}")
    return size


def format_size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def default_budget() -> int:
    env = os.environ.get(BUDGET_ENV)
    return parse_size(env) if env else DEFAULT_BUDGET


def tensor_bytes(tensors: Iterable) -> int:
    """Bytes of the distinct storages behind `tensors` (None entries are skipped)."""
    seen, total = set(), 0
    for t in tensors:
        if t is None:
            continue
        storage = t.untyped_storage()
        key = (storage.data_ptr(), t.device.type)
        if key not in seen:
            seen.add(key)
            total += storage.nbytes()
    return total


def view_bytes(view) -> int:
    """What an `engine.inspect.SaeView` holds: SAE, index, windows, vocabulary."""
    tensors = [*view.sae.parameters(), *view.sae.buffers(), view.windows, getattr(view, "_logit_matrix", None)]
    if view.index is not None:
        tensors += list(view.index.tensors().values())
    vocab = getattr(view, "_vocab", None) or []
    return tensor_bytes(tensors) + sum(len(s) + 50 for s in vocab)


def builder_bytes(builder) -> int:
    """What an `engine.tree.TreeBuilder` holds beyond its views: the clean run and site means."""
    clean = builder.clean
    tensors = [builder.tokens, clean.logits, *clean.acts, *(s.mean_acts for s in builder.s.sites),
               *(s.mean_error for s in builder.s.sites)]
    return tensor_bytes(t for t in tensors if hasattr(t, "untyped_storage"))


Key = Hashable


@dataclass
class _Entry:
    value: Any
    nbytes: int


@dataclass
class _Recipe:
    build: Callable[[], Any]
    measure: Callable[[Any], int]
    depends: tuple = ()
    what: str = "this item"


class Workspace:
    """The loaded model and an LRU of open SAE views and tree builders under `budget` bytes."""

    def __init__(self, budget: int | None = None):
        self.budget = budget if budget is not None else default_budget()
        self.model: Any = None  # engine.models.LoadedModel
        self.model_lock = threading.Lock()
        self.lock = threading.RLock()
        self._open: collections.OrderedDict[Key, _Entry] = collections.OrderedDict()
        self._recipes: dict[Key, _Recipe] = {}
        self.tree_roots: dict[str, Any] = {}  # tree name -> its root node (plain data, kept on eviction)
        self.circuit_sweeps: dict[str, Any] = {}  # circuit name -> its swept curves (kept on eviction)
        self.evictions = 0

    # ---- the model --------------------------------------------------------------------
    def require_model(self):
        with self.model_lock:  # a load in progress finishes first
            pass
        if self.model is None:
            raise UserError("no model is loaded: send model.load first")
        return self.model

    def set_model(self, lm) -> None:
        """A new model: everything open was tied to the old one."""
        with self.lock:
            self.model = lm
            self._open.clear()
            self._recipes.clear()
            self.tree_roots.clear()
            self.circuit_sweeps.clear()

    # ---- open items -----------------------------------------------------------------------
    def known(self, key: Key) -> bool:
        return key in self._recipes

    def open(self, key: Key, build: Callable[[], Any], measure: Callable[[Any], int],
             depends: Iterable[Key] = (), what: str = "this item", value: Any = None) -> Any:
        """Admit `value` (or build it now), remember how to rebuild it, and keep it under the budget."""
        recipe = _Recipe(build, measure, tuple(depends), what)
        if value is None:
            value = build()
        with self.lock:
            self._admit(key, value, recipe)
            self._recipes[key] = recipe
        return value

    def get(self, key: Key) -> Any:
        """An open item; an evicted one is rebuilt from its recipe. KeyError if never opened."""
        with self.lock:
            entry = self._open.get(key)
            if entry is not None:
                self._open.move_to_end(key)
                return entry.value
            recipe = self._recipes[key]
        value = recipe.build()  # outside the lock: rebuilding can take seconds
        with self.lock:
            entry = self._open.get(key)
            if entry is not None:  # another request rebuilt it meanwhile
                return entry.value
            self._admit(key, value, recipe)
        return value

    def _admit(self, key: Key, value: Any, recipe: _Recipe) -> None:
        size = recipe.measure(value)
        if size > self.budget:
            raise UserError(f"the engine's memory budget ({format_size(self.budget)}) is too small for "
                            f"{recipe.what} ({format_size(size)}): start the engine with a larger "
                            f"--memory-budget (or {BUDGET_ENV})")
        self._drop(key)
        self._open[key] = _Entry(value, size)
        self._enforce(keep={key, *recipe.depends})

    def _drop(self, key: Key) -> None:
        """Evict `key` and everything that depends on it."""
        if self._open.pop(key, None) is None:
            return
        self.evictions += 1
        for other, recipe in list(self._recipes.items()):
            if key in recipe.depends:
                self._drop(other)

    def _enforce(self, keep: set = frozenset()) -> None:
        while self.used() > self.budget:
            victim = next((k for k in self._open if k not in keep), None)
            if victim is None:
                break
            self._drop(victim)

    def remeasure(self) -> None:
        """Measure every open item again and evict down to the budget (after each request)."""
        with self.lock:
            for key, entry in self._open.items():
                entry.nbytes = self._recipes[key].measure(entry.value)
            newest = next(reversed(self._open), None)
            self._enforce(keep={newest, *self._recipes[newest].depends} if newest is not None else set())

    def open_items(self) -> list[tuple[Key, Any]]:
        with self.lock:
            return [(k, e.value) for k, e in self._open.items()]

    def used(self) -> int:
        return sum(e.nbytes for e in self._open.values())

    def stats(self) -> dict:
        with self.lock:
            return {"budget": self.budget, "used": self.used(), "open": len(self._open),
                    "known": len(self._recipes), "evictions": self.evictions}
