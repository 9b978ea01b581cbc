"""The base of every result struct, apart from engine/protocol.py so that the protocol's
parts in other modules (engine/protocol_graph.py) can share it without a cycle."""

from __future__ import annotations

import msgspec


class Result(msgspec.Struct, kw_only=True):
    """Base of every result type."""
