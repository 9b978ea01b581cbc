"""Small text helpers shared by widgets: tokens made visible, probability bars.

Notes
- Tokens keep their leading spaces, which matter (" f" and "f" are different
  tokens), so whitespace is drawn with visible marks rather than repr() quotes.
"""

from __future__ import annotations

_WHITESPACE = str.maketrans({" ": "·", "\n": "↵", "\t": "→", "\r": "␍"})
_EIGHTHS = " ▏▎▍▌▋▊▉"


def visible_token(token: str) -> str:
    """A token with its whitespace shown: `" f"` -> `"·f"`, `"\\n"` -> `"↵"`."""
    if token == "":
        return "∅"
    return token.translate(_WHITESPACE)


def bar(fraction: float, width: int) -> str:
    """A horizontal bar of `width` cells filled to `fraction`, in eighths of a cell."""
    fraction = min(max(fraction, 0.0), 1.0)
    eighths = round(fraction * width * 8)
    full, part = divmod(eighths, 8)
    text = "█" * full + (_EIGHTHS[part] if part else "")
    return text.ljust(width)
