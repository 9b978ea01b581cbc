"""The wire protocol: the only module both the engine and the TUI import.

JSON lines, one message per line, each a msgspec struct tagged by `type`. See
`engine/PROTOCOL.md` for the conversation; this module is its single definition.

Notes
- Request parameters are typed per method (`PARAMS`); the server validates them
  with msgspec, so a missing field or a wrong type becomes an error reply that
  names the field, never an exception in a handler.
- Importing this module must stay cheap and must not pull in torch or textual.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

import msgspec

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # longer lines are refused (and skipped) with an error


class Hello(msgspec.Struct, tag="hello", tag_field="type"):
    """The engine's first line."""

    protocol: int
    version: str
    pid: int
    capabilities: list[str]
    auth: Literal["none", "token"] = "none"


class Auth(msgspec.Struct, tag="auth", tag_field="type"):
    """First client line on a TCP connection."""

    token: str


class Request(msgspec.Struct, tag="request", tag_field="type"):
    id: str
    method: str
    params: dict[str, Any] = {}


class Event(msgspec.Struct, tag="event", tag_field="type"):
    """Progress, metrics or a log line for request `id`; any number before its reply."""

    id: str
    kind: Literal["progress", "metrics", "log"]
    data: dict[str, Any]


class Reply(msgspec.Struct, tag="reply", tag_field="type"):
    """The one final answer to request `id`."""

    id: str
    status: Literal["ok", "error", "cancelled"]
    result: Optional[dict[str, Any]] = None
    error: Optional[str] = None


class Error(msgspec.Struct, tag="error", tag_field="type"):
    """A line that could not be taken as a request (no reply will follow)."""

    message: str
    id: Optional[str] = None


Message = Union[Hello, Auth, Request, Event, Reply, Error]


# ---- parameters of each method -------------------------------------------------

class NoParams(msgspec.Struct, forbid_unknown_fields=True):
    pass


class ModelLoadParams(msgspec.Struct, forbid_unknown_fields=True):
    spec: str = "default"
    device: str = "auto"
    dtype: str = "float32"


class PredictParams(msgspec.Struct, forbid_unknown_fields=True):
    text: str
    top: int = 10


class CancelParams(msgspec.Struct, forbid_unknown_fields=True):
    target: str  # the id of the request to cancel


class SleepParams(msgspec.Struct, forbid_unknown_fields=True):
    """A test job: `steps` progress events spread over `seconds`."""

    seconds: float = 1.0
    steps: int = 10


class TrainStartParams(msgspec.Struct, forbid_unknown_fields=True):
    """Runs trained side by side: each a dict of `TrainConfig` fields plus `out` (its folder)."""

    runs: list[dict[str, Any]]
    resume: bool = False


class RunReadParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str  # a run folder: its metrics file is replayed as the result


class SaeOpenParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    corpus: Optional[str] = None  # None: the shipped shard
    tokens: Optional[int] = None  # corpus tokens of the index (None: an existing one, else 1M)
    context: Optional[int] = None  # window length of the index (None: an existing one's, else min(n_ctx, 256))
    build_index: bool = True  # build the index now if there is none


class FeaturePageParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    feature: int
    top: int = 10


class FeatureLiveParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    text: str


class FeatureSearchParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str
    kind: Literal["text", "token", "densest", "dead"]
    query: str = ""
    n: int = 20


class TreeOpenParams(msgspec.Struct, forbid_unknown_fields=True):
    """Open an ablation tree rooted at the prediction at `position` (None: the last token)."""

    tree: str  # a name the client picks; later requests refer to it
    upstream: str
    downstream: str
    prompt: str
    position: Optional[int] = None  # prompt token index from 0
    mode: Literal["zero", "mean"] = "zero"
    method: Literal["exact", "attribution"] = "attribution"
    top: int = 8
    context: Optional[int] = None  # window length of the SAEs' indexes (mean ablation, descriptions)


class TreeNodeParams(msgspec.Struct, forbid_unknown_fields=True):
    """A node of an open tree, by its path of child indices from the root."""

    tree: str
    path: list[int]
    method: Optional[Literal["exact", "attribution"]] = None  # override for this request


class TreeAblateParams(msgspec.Struct, forbid_unknown_fields=True):
    """What ablating these upstream features (together) drives: a down tree."""

    tree: str
    site: int
    features: list[int]
    mode: Literal["zero", "mean"] = "zero"


PARAMS: dict[str, type[msgspec.Struct]] = {
    "ping": NoParams,
    "model.info": NoParams,
    "model.load": ModelLoadParams,
    "predict": PredictParams,
    "cancel": CancelParams,
    "jobs": NoParams,
    "sleep": SleepParams,
    "train.start": TrainStartParams,
    "train.read": RunReadParams,
    "sae.open": SaeOpenParams,
    "feature.page": FeaturePageParams,
    "feature.live": FeatureLiveParams,
    "feature.search": FeatureSearchParams,
    "tree.open": TreeOpenParams,
    "tree.expand": TreeNodeParams,
    "tree.check": TreeNodeParams,
    "tree.ablate": TreeAblateParams,
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def encode(msg: Message) -> bytes:
    """One message as one line, newline included."""
    return _encoder.encode(msg) + b"\n"


def decode(line: bytes | str) -> Message:
    """Parse one line; raises `msgspec.DecodeError`/`ValidationError` when it is not a message."""
    return _decoder.decode(line)


def parse_params(method: str, params: dict[str, Any]) -> msgspec.Struct:
    """Typed parameters for `method`; raises KeyError (unknown method) or ValidationError."""
    return msgspec.convert(params, PARAMS[method])
