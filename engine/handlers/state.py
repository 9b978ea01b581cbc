"""What outlives a request: the engine's workspace (the model and what is open on it).

Handlers take it as `state`; `EngineState` is the name they use for
`engine.workspace.Workspace`.
"""

from engine.workspace import Workspace as EngineState

__all__ = ["EngineState"]
