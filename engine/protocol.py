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

from engine.protocol_base import Result
from engine.protocol_graph import *  # noqa: F401,F403 (the graph methods' structs, re-exported)
from engine.protocol_graph import GRAPH_PARAMS, GRAPH_RESULTS

PROTOCOL_VERSION = 1
MAX_LINE_BYTES = 1 << 20  # longer lines are refused (and skipped) with an error
# An SAE is named by a folder path (the engine's: absolute, or relative to the engine's
# working directory) or by `release:RELEASE/SAE_ID` (a pretrained sae_lens SAE).
SAE_RELEASE_PREFIX = "release:"


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
    """Runs trained side by side: each a dict of `TrainSettings` fields plus `out` (its folder);
    with `resume`, fields left out are the saved run's (`{"out": ...}` alone resumes it).
    The training is a process of its own: cancelling this request stops it
    (checkpointed; the reply comes once it has stopped), the client going away does
    not; `train.follow` follows it again."""

    runs: list[dict[str, Any]]
    resume: bool = False
    ranks: int = 1  # ranks on the engine's machine (torchrun); data-parallel: the batch is split over them
    spread: bool = False  # with ranks > 1: deal the runs to the ranks instead (each trains its own SAEs)


class RunReadParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str  # a run folder: its metrics file is replayed as the result


class TrainScanParams(msgspec.Struct, forbid_unknown_fields=True):
    path: str  # a run folder, or a folder of runs trained side by side


class TrainFollowParams(msgspec.Struct, forbid_unknown_fields=True):
    """A training job by its id (`train.list`), or by one of its run folders."""

    job: Optional[str] = None
    out: Optional[str] = None
    replay: bool = True  # send the metrics recorded so far first


class TrainStopParams(msgspec.Struct, forbid_unknown_fields=True):
    """Stop a training job (by id, or by one of its run folders) at its next step, checkpointed."""

    job: Optional[str] = None
    out: Optional[str] = None


EMERGENCE_COSINE = 0.9  # a feature has formed once its decoder direction stays this close to the final one
SHARED_COSINE = 0.7  # two runs share a feature when matched one-to-one at least this close


class EmergenceParams(msgspec.Struct, forbid_unknown_fields=True):
    """When a run's features formed, from its decoder snapshots (`train.emergence`)."""

    path: str  # a run folder (running or finished)
    threshold: float = EMERGENCE_COSINE
    against: Optional[str] = None  # another run (another seed): the fraction of features they share, over training
    shared_threshold: float = SHARED_COSINE


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


MASK_STEPS = 150  # Adam steps of one mask circuit


class CircuitFindParams(msgspec.Struct, forbid_unknown_fields=True):
    """Find a circuit for a task through SAE sites (`saes`, upstream first) and evaluate it.

    Without `threshold` the sweep runs and the circuit shown is the smallest on the
    curve (with error nodes where `errors`) whose faithfulness reaches
    `CIRCUIT_TARGET_FAITHFULNESS`, else the largest swept."""

    task: str  # a JSON-lines file or a shipped task's name
    saes: list[str]
    circuit: str = "circuit"  # a name the client picks; later requests refer to it
    # mask: a binary mask over (position, latent) trained for the metric (engine/circuits/mask.py);
    # then `threshold` is the mask's sparsity weight lambda, circuits are per position, and
    # `errors` keeps the error terms clean (else they sit at their means)
    method: Literal["attribution", "ig", "mask"] = "attribution"
    ig_steps: int = 10
    mask_steps: int = MASK_STEPS  # Adam steps per mask
    threshold: Optional[float] = None  # nodes with |effect| above it
    edge_threshold: Optional[float] = None  # edges with |effect| above it (default: threshold / 4)
    errors: bool = True  # error nodes may enter the circuit
    per_position: bool = False  # nodes per (feature, position) instead of summed over positions
    sweep: bool = False  # also the faithfulness/completeness curves (always without a threshold)
    patch_state: Literal["mean", "zero"] = "mean"  # single-prompt tasks: the state nodes are patched to
    max_nodes: int = 2000  # the sweep's largest circuit
    points: int = 16  # circuits on the sweep's log grid
    context: Optional[int] = None  # window length of the SAEs' indexes (descriptions)


class CircuitThresholdParams(msgspec.Struct, forbid_unknown_fields=True):
    """The open circuit at another threshold (nodes, edges, figures); its effects are kept."""

    circuit: str
    threshold: float
    errors: Optional[bool] = None  # None: as the circuit was found
    edge_threshold: Optional[float] = None


class CircuitVerifyParams(msgspec.Struct, forbid_unknown_fields=True):
    """Exact effects of nodes (ids as in `CircuitNode.id`) and edges ([source, target])
    of an open circuit, by ablation, beside their estimates."""

    circuit: str
    nodes: list[str] = []
    edges: list[list[str]] = []


class FeatureMapParams(msgspec.Struct, forbid_unknown_fields=True):
    """A 2-D map of an SAE's unit decoder directions, clustered (`sae.map`, `saescope map`)."""

    path: str
    method: Literal["auto", "umap", "pca"] = "auto"  # auto: UMAP when umap-learn is installed, else PCA
    clusters: int = 12  # k-means clusters of the directions
    color: Literal["density", "emergence"] = "density"  # emergence needs the run's emergence.json
    seed: int = 0


PARAMS: dict[str, type[msgspec.Struct]] = {
    "ping": NoParams,
    "model.info": NoParams,
    "model.load": ModelLoadParams,
    "predict": PredictParams,
    "cancel": CancelParams,
    "jobs": NoParams,
    "sleep": SleepParams,
    "workspace": NoParams,
    "train.start": TrainStartParams,
    "train.read": RunReadParams,
    "train.scan": TrainScanParams,
    "train.list": NoParams,
    "train.follow": TrainFollowParams,
    "train.stop": TrainStopParams,
    "train.emergence": EmergenceParams,
    "sae.open": SaeOpenParams,
    "feature.page": FeaturePageParams,
    "feature.live": FeatureLiveParams,
    "feature.search": FeatureSearchParams,
    "tree.open": TreeOpenParams,
    "tree.expand": TreeNodeParams,
    "tree.check": TreeNodeParams,
    "tree.ablate": TreeAblateParams,
    "circuit.find": CircuitFindParams,
    "circuit.threshold": CircuitThresholdParams,
    "circuit.verify": CircuitVerifyParams,
    "sae.map": FeatureMapParams,
    **GRAPH_PARAMS,
}


# ---- results of each method ----------------------------------------------------
# What a reply's `result` holds, per method. The engine's handlers return these
# structs; the client decodes every result into its type, so the TUI reads
# attributes, never string keys, and a renamed field fails in tests and type checks.

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
    """A job of this session: running, or among the last few that ended."""

    id: str
    method: str
    started: float
    status: Literal["running", "ok", "error", "cancelled"] = "running"
    error: Optional[str] = None  # why it failed
    ended: Optional[float] = None


class JobList(Result):
    jobs: list[JobInfo]  # running now
    ended: list[JobInfo] = []  # the last few that ended, oldest first, with their status and error


class WorkspaceStats(Result):
    """What the engine holds open beside the model, against its memory budget."""

    budget: int  # bytes
    used: int  # bytes held by open SAEs, indexes and trees
    open: int  # items held now
    known: int  # items opened so far (evicted ones reopen on demand)
    evictions: int


class SaeOpened(Result):
    path: str
    hook: str
    d_sae: int
    architecture: str
    indexed: bool
    index_tokens: int
    alive: Optional[int] = None  # features that fire at least once in the index (not the dead fraction)
    # The dead fraction by its one rule (engine/figures.py: never fired on the first
    # DEAD_TOKENS held-out tokens), from the SAE's saved evaluation; None when it has none.
    dead_fraction: Optional[float] = None
    dead_tokens: Optional[int] = None


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
    description: str = ""  # the feature's short description (its top tokens); "" without an index


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


class PredictionRow(msgspec.Struct):
    token: str
    id: int
    before: float  # probability before the ablations
    after: float  # and with them
    change: float  # after - before
    rank_before: int  # from 1
    rank_after: int


class PredictionChange(msgspec.Struct):
    """The prediction before and after ablations: the top tokens of either."""

    rows: list[PredictionRow]  # by probability after, then before
    top_before: str
    top_after: str
    top_changed: bool


class TreeAblated(Result):
    root: TreeNode
    prediction: PredictionChange  # at the tree's position


# ---- results of circuit methods -------------------------------------------------
CIRCUIT_TARGET_FAITHFULNESS = 0.8  # the circuit `circuit.find` shows when no threshold is given
CIRCUIT_METRIC_NODE = "metric"  # the id of the metric, the root every edge leads to


class CircuitNode(msgspec.Struct, omit_defaults=True):
    id: str  # "attn_out/417", per position "attn_out/417@5", an error term "attn_out/error"
    site: str
    site_index: int
    effect: float  # on the metric, mean over the task's discovery examples
    feature: Optional[int] = None  # None: the site's error term
    position: Optional[int] = None  # prompt token index from 0; None: summed over positions
    description: str = ""


class CircuitEdge(msgspec.Struct):
    source: str  # node ids; `target` may be CIRCUIT_METRIC_NODE
    target: str
    effect: float


class CurvePoint(msgspec.Struct):
    threshold: float  # the mask method's: its lambda
    nodes: int
    features: int  # nodes that are features (the rest are error terms)
    faithfulness: float
    completeness: float
    plain: Optional[float] = None  # m(C) / m(M): faithfulness without the m(empty) baseline


class CircuitFigures(msgspec.Struct):
    """One circuit evaluated by ablation on the held-out examples (metric means)."""

    threshold: float
    nodes: int
    features: int
    m_model: float
    m_empty: float
    m_circuit: float
    m_complement: float
    faithfulness: float
    completeness: float
    plain: Optional[float] = None  # m(C) / m(M)


class CircuitCrossings(msgspec.Struct, frozen=True):
    """The smallest swept circuit reaching faithfulness 0.5 and 0.8 (None: none did),
    with error nodes and without."""

    half: Optional[int] = None
    most: Optional[int] = None
    half_features: Optional[int] = None
    most_features: Optional[int] = None


class CircuitFound(Result):
    circuit: str
    task: str
    method: str
    metric: str  # what the metric is, in words
    pairs: int  # discovery examples
    held_out: int  # evaluation examples
    tokens: list[str]  # the first clean prompt's tokens, without BOS
    sites: list[SiteInfo]
    errors: bool
    per_position: bool
    edge_threshold: float
    nodes: list[CircuitNode]  # by |effect|, largest first
    edges: list[CircuitEdge]
    figures: CircuitFigures
    curve: list[CurvePoint] = []  # with error nodes, by size (empty unless swept)
    curve_features: list[CurvePoint] = []  # feature nodes only
    crossings: CircuitCrossings = CircuitCrossings()
    complete: bool = True  # False: a sweep cancelled partway; the curves hold what it finished


class VerifiedNode(msgspec.Struct):
    id: str
    estimate: float
    exact: float


class VerifiedEdge(msgspec.Struct):
    source: str
    target: str
    estimate: float
    exact: float


class CircuitVerified(Result):
    nodes: list[VerifiedNode]
    edges: list[VerifiedEdge]
    spearman_nodes: Optional[float] = None  # rank agreement (None: fewer than 3 nodes)
    spearman_edges: Optional[float] = None


# ---- the feature map (engine/geometry.py) ---------------------------------------

class MapCluster(msgspec.Struct):
    """A cluster of decoder directions; ids number them largest first."""

    id: int
    size: int
    x: float  # the mean map position of its features
    y: float
    features: list[int]  # its most central features (cosine to its centroid), most central first
    descriptions: list[str]  # each of those features' description from the SAE's index ('' without one)
    description: str = ""  # the first few non-empty ones joined: the cluster's label
    density: Optional[float] = None  # median log10 firing density of its features (None: no sparsity file)


class MapColoring(msgspec.Struct):
    """One way to colour the map: bins over a per-feature value, low to high."""

    name: Literal["density", "emergence"]
    title: str  # what is binned, e.g. "log10 firing density"
    labels: list[str]  # one per bin
    bin: list[int]  # per feature: an index into `labels`, -1 where the feature has no value


class FeatureMap(Result):
    """Every feature as a point (`x`, `y`, `cluster`, per-feature columns) plus its clusters."""

    path: str
    d_sae: int
    d_in: int
    method: Literal["umap", "pca"]  # the method used (`method_note` says why, when auto chose)
    x: list[float]
    y: list[float]
    cluster: list[int]  # per feature: a `MapCluster.id`
    clusters: list[MapCluster]
    method_note: str = ""
    explained_variance: list[float] = []  # PCA: fraction of the directions' variance along x and y
    seed: int = 0
    color: Literal["density", "emergence"] = "density"  # asked for; `colorings` has every one available
    density: Optional[list[float]] = None  # log10 firing density (sparsity.safetensors); None without one
    emergence: Optional[list[Optional[int]]] = None  # step after which each stayed formed (None: never); emergence.json
    colorings: list[MapColoring] = []
    described: bool = False  # the clusters carry descriptions from the SAE's index
    description_note: str = ""  # why not, when not


# ---- results of training methods ----------------------------------------------
# The training configuration is defined here, once: the engine's `TrainConfig`
# (engine/train/config.py) is this struct plus validation, and the TUI's form
# reads its fields and defaults from it.

TRAIN_ARCHITECTURES = ("relu", "jumprelu", "topk", "batchtopk")
TRAIN_MAX_RANKS = 64  # of a training job on one machine (`train.start`'s `ranks`, `--distributed N`)
SNAPSHOTS_PER_RUN = 24  # decoder snapshots a run keeps by default (`TrainSettings.snapshot_every` 0)
DEFAULT_TRAIN_HOOK = "blocks.0.hook_mlp_out"


class TrainSettings(msgspec.Struct, frozen=True, kw_only=True):
    """What one SAE training run is (saved as `saescope.json` in its folder)."""

    hook: str
    """TransformerLens hook point the SAE reads, e.g. `blocks.0.hook_mlp_out`."""
    arch: str = "topk"
    """relu (L1 penalty), jumprelu, topk or batchtopk."""
    d_sae: int = 2048
    """Number of features."""
    k: int = 32
    """Active features per token (topk), on average over the batch (batchtopk), or the
    target L0 of the quadratic L0 penalty (jumprelu)."""
    l1: float = 5.0
    """L1 coefficient (relu) or coefficient of the L0 penalty (jumprelu)."""
    threshold_init: float = 0.1
    """Initial JumpReLU threshold, in units of the scaled input (jumprelu). It learns in
    log space at about `lr` per step, so a far start takes thousands of steps."""
    tokens: int = 2_000_000
    """Training tokens (activations)."""
    seed: int = 0
    """Seed of the SAE's initialisation."""
    data_seed: int = 0
    """Seed of the data order; runs that share it can share one model pass."""
    model: str = "default"
    """Model spec (see `saescope models`)."""
    context: int = 0
    """Tokens per window, BOS included (0: the model's context, at most 256)."""
    lr: float = 4e-4
    batch_size: int = 4096
    """Activations per optimiser step."""
    warmup_fraction: float = 0.05
    decay_fraction: float = 0.2
    """Final fraction of steps over which the learning rate decays linearly to lr/10."""
    dead_window: int = 1_000_000
    """A feature that has not fired in this many tokens counts as dead."""
    checkpoint_every: int = 100
    """Steps between checkpoints (0: only at the end or on cancel)."""
    eval_every: int = 0
    """Steps between evaluations with the SAE spliced in (0: only at the end)."""
    eval_tokens: int = 65_536
    """Held-out tokens for each evaluation."""
    snapshot_every: int = 0
    """Steps between snapshots of the decoder, for feature emergence (0: about
    `SNAPSHOTS_PER_RUN` per run; -1: none)."""

    @property
    def steps(self) -> int:
        return max(1, self.tokens // self.batch_size)


class DensityHistogram(msgspec.Struct):
    """Features by log10 firing density; `never_fired` (density 0) are in no bin."""

    edges: list[float]
    counts: list[int]
    never_fired: int = 0


class TrainRecord(msgspec.Struct, omit_defaults=True):
    """One line of a run's `metrics.jsonl`: a training step, an evaluation with the
    SAE spliced in (`kind` "eval", every `eval_every` steps), or a decoder snapshot
    saved after `step` (`kind` "snapshot", every `snapshot_every` steps, and one of the
    initial decoder at step -1). `step` counts from 0."""

    kind: Literal["step", "eval", "snapshot"]
    step: int
    tokens: Optional[int] = None  # training tokens so far (step) / evaluation tokens (eval)
    loss: Optional[float] = None
    losses: Optional[dict[str, float]] = None
    mse: Optional[float] = None
    explained_variance: Optional[float] = None
    l0: Optional[float] = None
    l1: Optional[float] = None
    dead_fraction_window: Optional[float] = None  # not fired within the run's dead_window tokens
    dead_fraction_density: Optional[float] = None
    lr: Optional[float] = None
    tokens_per_s: Optional[float] = None
    density_histogram: Optional[DensityHistogram] = None
    dead_fraction: Optional[float] = None  # eval: never fired on the held-out tokens
    dead_tokens: Optional[int] = None
    dead_context: Optional[int] = None
    ce_loss_score: Optional[float] = None
    kl_div_score: Optional[float] = None
    ce_loss_clean: Optional[float] = None
    ce_loss_with_sae: Optional[float] = None
    ce_loss_zero_ablation: Optional[float] = None
    kl_div_with_sae: Optional[float] = None
    kl_div_zero_ablation: Optional[float] = None


class RunEval(msgspec.Struct):
    """A finished run's final evaluation (its `eval.json`); None: not a number."""

    sae: str
    hook: str = ""
    arch: str = ""
    d_sae: int = 0
    tokens: int = 0
    l0: Optional[float] = None
    mse: Optional[float] = None
    explained_variance: Optional[float] = None
    dead_fraction: Optional[float] = None
    dead_tokens: Optional[int] = None  # the held-out tokens `dead_fraction` was measured on
    dead_context: Optional[int] = None  # their window length
    ce_loss_clean: Optional[float] = None
    ce_loss_with_sae: Optional[float] = None
    ce_loss_zero_ablation: Optional[float] = None
    ce_loss_score: Optional[float] = None
    kl_div_with_sae: Optional[float] = None
    kl_div_zero_ablation: Optional[float] = None
    kl_div_score: Optional[float] = None


class TrainResult(Result):
    """`train.start`, `train.follow`: every run's final evaluation, in the job's order."""

    job: str
    runs: list[RunEval]


TrainState = Literal["starting", "running", "finished", "stopped", "failed"]


class RunState(msgspec.Struct, omit_defaults=True):
    """A run folder's (or a job's) `state.json`. `stopped`: asked to stop (`train.stop`, a
    cancelled `train.start`, ctrl+c), checkpointed, so `train.start` with `resume`
    continues it exactly. `failed` with `resumable`: it died or failed with a
    checkpoint in place, and `resume` continues it too. There is no "paused" or
    "cancelled" run: a request is cancelled, a run is stopped."""

    state: TrainState
    job: str = ""
    pid: Optional[int] = None
    message: str = ""
    updated: float = 0.0
    step: Optional[int] = None  # the last step recorded in its metrics file (from 0)
    checkpoint: Optional[int] = None  # the step its checkpoint resumes from
    resumable: bool = False


class RunRead(Result):
    """`train.read`: a run folder's settings, metrics so far and final evaluation."""

    path: str
    config: TrainSettings
    records: list[TrainRecord]
    eval: Optional[RunEval] = None
    state: Optional[RunState] = None


class RunFolders(Result):
    """`train.scan`: the run folders at `path`: itself when it holds a run, else its
    sub-folders that do (runs trained side by side), sorted; each as `path/<name>`."""

    path: str
    runs: list[str]


class RunSummary(msgspec.Struct):
    out: str  # the folder as the client gave it
    path: str  # the folder on the engine's side, absolute
    config: TrainSettings
    state: RunState


class TrainJobInfo(msgspec.Struct):
    """One training process the engine started (it outlives the engine and the client)."""

    job: str
    state: RunState
    started: float
    resume: bool
    runs: list[RunSummary]
    log: str = ""  # the training process's own log file
    ranks: int = 1  # data-parallel ranks (one process each, under torchrun)


class TrainJobs(Result):
    jobs: list[TrainJobInfo]  # oldest first


class TrainStopping(Result):
    job: str
    state: TrainState  # the job's state when asked: "running" means it was signalled


class EmergencePoint(msgspec.Struct):
    """One decoder snapshot, matched to the reference decoder."""

    step: int  # training steps done when it was taken (0: the initial decoder)
    tokens: int
    formed: float  # fraction of reference features formed by now: matched above the threshold from here on
    matched: float  # fraction matched above the threshold at this snapshot (they may drift away later)
    mean_cosine: float  # mean matched cosine
    fired: float  # fraction of reference features that had fired at least once by now


class SharedPoint(msgspec.Struct):
    """Two runs' snapshots after the same number of steps, matched one-to-one."""

    step: int
    tokens: int
    shared: float  # fraction of features matched at `shared_threshold` or closer
    mean_cosine: float


class DensityPoint(msgspec.Struct):
    """The firing-density histogram (`DensityHistogram`'s bins) at one step."""

    step: int
    tokens: int
    counts: list[int]
    never_fired: int = 0


class Emergence(Result):
    """`train.emergence`: the emergence curve of a run's features (`engine.train.emergence`)."""

    path: str
    arch: str
    d_sae: int
    reference: Literal["final", "latest"]  # the finished SAE's decoder, or the latest snapshot of a running run
    reference_step: int
    method: Literal["hungarian", "greedy"]  # one-to-one optimal assignment, or each feature's nearest
    threshold: float
    points: list[EmergencePoint]
    baseline_matched: float  # a random dictionary of the same shape, matched the same way: fraction above threshold
    baseline_mean_cosine: float
    emergence_step: list[Optional[int]]  # per reference feature: the step from which it stayed matched
    first_fired_step: list[Optional[int]]  # per reference feature: the first step it fired at (None: never)
    density_edges: list[float] = []  # log10 density bin edges of `density`
    density: list[DensityPoint] = []  # the density histogram over training
    against: Optional[str] = None
    shared_threshold: float = SHARED_COSINE
    shared: list[SharedPoint] = []


# ---- event data ----------------------------------------------------------------

class Progress(msgspec.Struct, omit_defaults=True):
    fraction: Optional[float] = None
    message: Optional[str] = None
    step: Optional[int] = None
    total: Optional[int] = None
    # a mask circuit in training (engine/circuits/mask.py): its loss, latents kept, temperature
    loss: Optional[float] = None
    size: Optional[int] = None
    temperature: Optional[float] = None


class LogData(msgspec.Struct):
    message: str


class RunMetrics(msgspec.Struct):
    """One metrics record of run number `run` of a training job."""

    run: int
    record: TrainRecord


EVENT_DATA: dict[str, type] = {"progress": Progress, "log": LogData, "metrics": RunMetrics}

RESULTS: dict[str, type[Result]] = {
    "ping": Pong,
    "model.info": ModelInfo,
    "model.load": ModelInfo,
    "predict": Prediction,
    "cancel": Cancelling,
    "jobs": JobList,
    "sleep": Slept,
    "workspace": WorkspaceStats,
    "sae.open": SaeOpened,
    "feature.page": FeaturePage,
    "feature.live": LiveActs,
    "feature.search": SearchResults,
    "tree.open": TreeOpened,
    "tree.expand": TreeChildren,
    "tree.check": TreeAgreement,
    "tree.ablate": TreeAblated,
    "train.start": TrainResult,
    "train.follow": TrainResult,
    "train.read": RunRead,
    "train.scan": RunFolders,
    "train.list": TrainJobs,
    "train.stop": TrainStopping,
    "train.emergence": Emergence,
    "circuit.find": CircuitFound,
    "circuit.threshold": CircuitFound,
    "circuit.verify": CircuitVerified,
    "sae.map": FeatureMap,
    **GRAPH_RESULTS,
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
