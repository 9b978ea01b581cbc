"""Messages that move the user between panes (posted by a pane, routed by the app).

Notes
- Panes never reach into each other: the Ablation pane posts `OpenFeature` and the
  app switches to the Inspector and shows the page, so either pane can change
  without the other noticing.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message


@dataclass
class OpenFeature(Message):
    """Show this feature of this SAE folder in the Inspector."""

    path: str
    feature: int
