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
    """Progress, metrics or a log line for request `id`; any number before its reply.

    `data` is one of `EVENT_DATA[kind]`; `event_data(event)` decodes it."""

    id: str
    kind: Literal["progress", "metrics", "log"]
    data: Any


class Reply(msgspec.Struct, tag="reply", tag_field="type"):
    """The one final answer to request `id`.

    `result` is the method's `RESULTS[method]` struct; on the wire it is plain JSON,
    and a client decodes it into that type with `decode_result(method, reply)`."""

    id: str
    status: Literal["ok", "error", "cancelled"]
    result: Any = None
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


# ---- results of each method ----------------------------------------------------
# What a reply's `result` holds, per method. The engine's handlers return these
# structs; the client decodes every result into its type, so the TUI reads
# attributes, never string keys, and a renamed field fails in tests and type checks.

class Result(msgspec.Struct, kw_only=True):
    """Base of every result type."""


class Pong(Result):
    pong: bool
    time: float
    protocol: int
    version: str


class ModelInfo(Result):
    loaded: bool
    spec: str = ""
    name: str = ""
    source: str = ""
    device: str = ""
    dtype: str = ""
    n_layers: int = 0
    d_model: int = 0
    d_vocab: int = 0
    n_ctx: int = 0
    hooks: list[str] = []


class TokenProb(msgspec.Struct):
    token: str  # decoded text of the token
    id: int
    prob: float
    raw: str  # the tokenizer's own spelling (e.g. `Ġthe`)


class Prediction(Result):
    model: str
    tokens: list[str]  # the prompt's tokens, BOS first
    top: list[TokenProb]
    entropy: float  # nats, of the whole next-token distribution


class Slept(Result):
    slept: float
    steps: int


class Cancelling(Result):
    cancelling: str  # the id of the job asked to stop


class JobInfo(msgspec.Struct):
    id: str
    method: str
    started: float


class JobList(Result):
    jobs: list[JobInfo]


class SaeOpened(Result):
    path: str
    hook: str
    d_sae: int
    architecture: str
    indexed: bool
    index_tokens: int
    alive: Optional[int] = None  # features that fire at least once in the index


class Example(msgspec.Struct):
    """A stretch of corpus text around one activation of a feature."""

    window: int
    max: float  # the activation at `position`
    position: int  # index into `tokens` of the activating token
    tokens: list[str]
    acts: list[float]


class Histogram(msgspec.Struct):
    edges: list[float]
    counts: list[int]


class TokenEffect(msgspec.Struct):
    token: str
    id: int
    value: float


class LogitEffects(msgspec.Struct):
    """Direct-path logit effect of a feature's decoder direction: the most raised and lowered tokens."""

    top: list[TokenEffect]
    bottom: list[TokenEffect]
    note: str = ""  # why there are none (no direct path from this hook)


class Neighbour(msgspec.Struct):
    feature: int
    cosine: float  # of decoder directions


class FeaturePage(Result):
    sae: str
    hook: str
    feature: int
    d_sae: int
    density: float  # fraction of indexed tokens on which the feature fires
    fire_count: int
    max_activation: float
    mean_activation: float
    index_tokens: int
    description: str
    examples: list[Example]
    samples: list[Example]
    histogram: Histogram
    logits: LogitEffects
    neighbours: list[Neighbour]


class FeatureAct(msgspec.Struct):
    feature: int
    act: float


class TokenActs(msgspec.Struct):
    position: int
    token: str
    features: list[FeatureAct]


class Strongest(msgspec.Struct):
    feature: int
    max: float
    position: int


class LiveActs(Result):
    tokens: list[str]
    per_token: list[TokenActs]
    strongest: list[Strongest]


class SearchHit(msgspec.Struct, omit_defaults=True):
    feature: int
    max: Optional[float] = None  # kind "text": strongest activation on the text
    position: Optional[int] = None  # kind "text": where
    value: Optional[float] = None  # kind "token": direct logit effect on the token
    density: Optional[float] = None  # kinds "densest" and "dead"


class SearchResults(Result):
    results: list[SearchHit]


class NodeLabel(msgspec.Struct, omit_defaults=True):
    """What a tree node stands for."""

    kind: Literal["metric", "feature", "error", "logit", "ablation"]
    direction: Optional[Literal["up", "down"]] = None
    site: Optional[str] = None  # the SAE site's name (feature, error, ablation)
    site_index: Optional[int] = None
    feature: Optional[int] = None
    features: Optional[list[int]] = None  # ablation: the features ablated together
    mode: Optional[str] = None  # ablation: zero or mean
    token: Optional[str] = None  # logit
    token_id: Optional[int] = None
    metric: Optional[str] = None  # metric: e.g. "logit ' self' @ 7"


class TreeNode(msgspec.Struct):
    node: NodeLabel
    effect: float  # change of the parent's value when this node is ablated (root: its value)
    method: str  # how `effect` was computed: exact, attribution or value
    description: str = ""
    children: Optional[list["TreeNode"]] = None  # None: not expanded yet; []: a leaf


class SiteInfo(msgspec.Struct):
    name: str
    hook: str
    path: str


class TreeOpened(Result):
    tree: str
    tokens: list[str]  # the prompt's tokens without BOS
    position: int  # prompt token index (from 0) of the prediction
    predicted: str
    sites: list[SiteInfo]
    root: TreeNode


class TreeChildren(Result):
    path: list[int]
    children: list[TreeNode]


class AgreementPair(msgspec.Struct):
    feature: int
    exact: float
    attribution: float


class TreeAgreement(Result):
    path: list[int]
    n: int
    pearson: float
    spearman: float
    pairs: list[AgreementPair]


class TreeAblated(Result):
    root: TreeNode


# ---- event data ----------------------------------------------------------------

class Progress(msgspec.Struct, omit_defaults=True):
    fraction: Optional[float] = None
    message: Optional[str] = None
    step: Optional[int] = None
    total: Optional[int] = None


class LogData(msgspec.Struct):
    message: str


class RunMetrics(msgspec.Struct):
    """One metrics record of run number `run` of a training job."""

    run: int
    record: dict[str, Any]


EVENT_DATA: dict[str, type] = {"progress": Progress, "log": LogData, "metrics": RunMetrics}

RESULTS: dict[str, type[Result]] = {
    "ping": Pong,
    "model.info": ModelInfo,
    "model.load": ModelInfo,
    "predict": Prediction,
    "cancel": Cancelling,
    "jobs": JobList,
    "sleep": Slept,
    "sae.open": SaeOpened,
    "feature.page": FeaturePage,
    "feature.live": LiveActs,
    "feature.search": SearchResults,
    "tree.open": TreeOpened,
    "tree.expand": TreeChildren,
    "tree.check": TreeAgreement,
    "tree.ablate": TreeAblated,
}

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def encode(msg: Message) -> bytes:
    """One message as one line, newline included."""
    return _encoder.encode(msg) + b"\n"


def decode(line: bytes | str) -> Message:
    """Parse one line; raises `msgspec.DecodeError`/`ValidationError` when it is not a message."""
    return _decoder.decode(line)


def decode_result(method: str, result: Any) -> Any:
    """A reply's plain JSON `result` as the method's `RESULTS` struct; raises ValidationError."""
    return msgspec.convert(result, RESULTS[method])


def event_data(event: Event) -> Any:
    """An event's `data` as its kind's `EVENT_DATA` struct; raises ValidationError."""
    return msgspec.convert(event.data, EVENT_DATA[event.kind])


def parse_params(method: str, params: dict[str, Any]) -> msgspec.Struct:
    """Typed parameters for `method`; raises KeyError (unknown method) or ValidationError."""
    return msgspec.convert(params, PARAMS[method])
