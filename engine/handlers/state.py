"""What outlives a request: the engine's loaded model and what is open on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UserError


@dataclass
class EngineState:
    """What outlives a request: the loaded model (shared by all connections)."""

    model: Any = None  # engine.models.LoadedModel
    model_lock: threading.Lock = field(default_factory=threading.Lock)
    views: dict = field(default_factory=dict)  # SAE folder -> engine.inspect.SaeView
    trees: dict = field(default_factory=dict)  # tree name -> (TreeBuilder, root node)

    def require_model(self):
        with self.model_lock:  # a load in progress finishes first
            pass
        if self.model is None:
            raise UserError("no model is loaded: send model.load first")
        return self.model
