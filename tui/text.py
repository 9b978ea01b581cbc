"""Small text helpers shared by widgets: tokens made visible, probability bars.

Notes
- Tokens keep their leading spaces, which matter (" f" and "f" are different
  tokens), so whitespace is drawn with visible marks rather than repr() quotes.
"""

from __future__ import annotations

from engine.feature_text import visible_token

__all__ = ["bar", "visible_token"]

_EIGHTHS = " ▏▎▍▌▋▊▉"


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)
