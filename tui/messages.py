"""Messages the engine link posts to the app: small dataclasses, one per kind of news.

Notes
- Textual messages can be dataclasses: `Message.__post_init__` does the setup that
  its `__init__` would, and the generated `__init__` calls it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

from textual.message import Message

ConnectionState = Literal["connecting", "connected", "disconnected"]


@dataclass
class ConnectionChanged(Message):
    """The engine connection changed state; `reason` says why it is down, if it is."""

    state: ConnectionState
    how: str
    reason: str = ""
    died: bool = False
    """True when a working engine went away (not a failed start, not a close)."""


@dataclass
class ModelChanged(Message):
    state: Literal["none", "loading", "loaded", "failed"]
    spec: str
    name: str = ""
    device: str = ""
    detail: str = ""


@dataclass(frozen=True)
class JobView:
    """A running engine job as the status bar shows it."""

    id: str
    method: str
    fraction: Optional[float] = None


@dataclass
class JobsChanged(Message):
    jobs: tuple[JobView, ...]


@dataclass
class JobFailed(Message):
    """A job ended with an error (its message is in the log as well)."""

    method: str
    error: str


@dataclass
class LogLine(Message):
    """A line for the log view: engine stderr, client notes, or the app's own."""

    source: Literal["engine", "client", "app"]
    text: str
