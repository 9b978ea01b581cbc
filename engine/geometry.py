"""The feature map: an SAE's decoder directions laid out in 2-D, clustered, coloured.

`feature_map(sae)` returns a `FeatureMap` (engine/protocol.py): every feature as a
point, its cluster, its firing density and (for a run trained with snapshots) the
step at which it emerged, plus each cluster's most central features and their
descriptions. `saescope map` and the `sae.map` request are thin callers.

Notes
- Input: the rows of W_dec scaled to unit length. A feature's direction, not its
  norm, says what it writes; norms mostly track how the SAE was trained.
- PCA is the eigendecomposition of the centred directions' d_in x d_in covariance
  in float64: as cheap for 65k features as for 1k, and deterministic. Each axis's
  sign is fixed so its largest-magnitude loading is positive (sklearn's
  `svd_flip` rule), so the same SAE always gives the same picture.
- UMAP (umap-learn, cosine metric, seeded, hence single-threaded) is optional:
  `method="auto"` uses it when the package is importable and says which it used.
  It runs as one call (numba code): a cancel is seen before and after it.
- Clusters: scikit-learn's KMeans on the unit directions (n_init fixed, seeded),
  numbered largest first. A cluster's centre on the map is the mean of its points.
- Density is the SAE folder's `sparsity.safetensors` (key `sparsity`, log10 of the
  firing density, as sae_lens writes it): never measured here. Emergence is the
  run's `emergence.json` (key `emergence_step`, per feature an int or null).
- A small map (up to `SMALL_WORK` decoder entries) runs with BLAS and OpenMP on one
  thread (`small_work_threads`): process-wide, but for about a tenth of a second.
- Descriptions come from the SAE's index through a `SaeView` (the top tokens at a
  feature's maxima, `SaeView.description`); without one they stay empty and
  `description_note` says why. Nothing is invented.
"""

from __future__ import annotations

import difflib
import importlib.util
import json
import math
from pathlib import Path

import numpy as np

from engine.errors import UserError
from engine.jobs import Job, as_job
from engine.protocol import SAE_RELEASE_PREFIX, FeatureMap, MapCluster, MapColoring

METHODS = ("auto", "umap", "pca")
COLORS = ("density", "emergence")
CENTRAL = 5  # central features listed per cluster
DESCRIBED = 3  # of which this many non-empty descriptions make the cluster's label
KMEANS_INIT = 4  # k-means restarts: a fixed number, so a seed gives one answer
EMERGENCE_BINS = 5
SMALL_WORK = 1 << 22  # decoder entries (d_sae * d_in) up to which the map runs on one thread
NO_INDEX = "the SAE has no index here: run `saescope index {path}` to describe its clusters"


def resolve_sae(spec: str | Path) -> str:
    """An SAE argument as the commands take it: a folder, a release, or the name of a
    shipped SAE (`mlp_out-topk` -> weights/saes/mlp_out-topk); a plain name that is
    none of these is a `UserError` listing the shipped names."""
    from engine.paths import WEIGHTS_DIR

    text = str(spec)
    if text.startswith(SAE_RELEASE_PREFIX) or "/" in text or Path(text).expanduser().exists():
        return text
    shipped = WEIGHTS_DIR / "saes"
    if (shipped / text / "cfg.json").exists():
        return str(shipped / text)
    names = sorted(p.parent.name for p in shipped.glob("*/cfg.json"))
    near = difflib.get_close_matches(text, names, n=4, cutoff=0.4) or names[:6]
    raise UserError(f"no SAE folder or shipped SAE named {text!r}" + (f" (shipped: {', '.join(near)})" if near else ""))


def unit_directions(sae) -> np.ndarray:
    """W_dec's rows scaled to unit length, [d_sae, d_in] float64 (a zero row stays zero)."""
    w = sae.W_dec.detach().float().cpu().numpy().astype(np.float64)
    norms = np.linalg.norm(w, axis=1, keepdims=True)
    return w / np.where(norms > 0, norms, 1.0)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """The rows of `x` on their top two principal axes (signs fixed), and the fraction
    of the total variance along each."""
    centred = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(centred.T @ centred)  # ascending
    axes = vectors[:, ::-1][:, :2]
    signs = np.sign(axes[np.abs(axes).argmax(axis=0), [0, 1]])
    axes = axes * np.where(signs == 0, 1.0, signs)
    total = float(values.clip(min=0).sum())
    explained = [float(v / total) if total > 0 else 0.0 for v in values[::-1][:2].clip(min=0)]
    return centred @ axes, explained


def umap_2d(x: np.ndarray, seed: int, neighbours: int = 15, epochs: int | None = None) -> np.ndarray:
    import warnings

    import umap

    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded runs are serial, as meant
        warnings.simplefilter("ignore")
        reducer = umap.UMAP(n_neighbors=max(2, min(neighbours, len(x) - 1)), metric="cosine", min_dist=0.1,
                            random_state=seed, n_epochs=epochs)
        return reducer.fit_transform(x.astype(np.float32)).astype(np.float64)


def umap_available() -> bool:
    return importlib.util.find_spec("umap") is not None


def pick_method(method: str) -> tuple[str, str]:
    """(the method to use, a note saying why when `auto` chose)."""
    if method not in METHODS:
        raise UserError(f"unknown map method {method!r}: use {', '.join(METHODS)}")
    if method == "umap" and not umap_available():
        raise UserError("UMAP needs umap-learn: pip install 'saescope[map]' (or use --method pca)")
    if method != "auto":
        return method, ""
    if umap_available():
        return "umap", "auto: umap-learn is installed"
    return "pca", "auto: umap-learn is not installed, so PCA"


def kmeans(x: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(label per row, centroid per cluster), clusters renumbered largest first."""
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=n, n_init=KMEANS_INIT, random_state=seed).fit(x)
    sizes = np.bincount(km.labels_, minlength=n)
    order = np.argsort(-sizes, kind="stable")
    rank = np.empty(n, dtype=int)
    rank[order] = np.arange(n)
    return rank[km.labels_], km.cluster_centers_[order]


def read_density(folder: Path | None) -> np.ndarray | None:
    """log10 firing density per feature from `sparsity.safetensors`, or None."""
    if folder is None or not (folder / "sparsity.safetensors").exists():
        return None
    from safetensors.numpy import load_file

    try:
        values = load_file(str(folder / "sparsity.safetensors"))["sparsity"].astype(np.float64)
    except Exception as e:  # a damaged file: say so, do not guess
        raise UserError(f"cannot read {folder / 'sparsity.safetensors'}: {e}") from None
    # sae_lens writes log10(density + 1e-10): a -inf can only be a density of 0
    return np.where(np.isfinite(values), values, -10.0)


def ensure_emergence(folder: Path | None) -> None:
    """A finished run with decoder snapshots but no `emergence.json` yet: compute it
    (engine/train/emergence.py writes it)."""
    if folder is None or (Path(folder) / "emergence.json").exists():
        return
    from engine.train.snapshots import list_snapshots

    folder = Path(folder)
    if (folder / "saescope.json").exists() and (folder / "cfg.json").exists() and list_snapshots(folder):
        from engine.train.emergence import emergence

        emergence(folder)


def read_emergence(folder: Path | None, d_sae: int) -> list[int | None] | None:
    """The step after which each feature stayed formed, from `emergence.json`, or None."""
    ensure_emergence(folder)
    path = None if folder is None else folder / "emergence.json"
    if path is None or not path.exists():
        return None
    try:
        steps = json.loads(path.read_text())["emergence_step"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise UserError(f"cannot read {path}: {type(e).__name__} {e}") from None
    if not isinstance(steps, list) or len(steps) != d_sae:
        raise UserError(f"{path}: emergence_step must list one step (or null) per feature, {d_sae} of them")
    if any(s is not None and (isinstance(s, bool) or not isinstance(s, int)) for s in steps):
        raise UserError(f"{path}: emergence_step holds something other than integers and nulls")
    return steps


def check_color(folder: Path | None, color: str) -> None:
    """A `UserError` when `color` cannot be drawn for the SAE in `folder`."""
    if color not in COLORS:
        raise UserError(f"unknown colouring {color!r}: use {' or '.join(COLORS)}")
    if color == "emergence":
        ensure_emergence(folder)
    if color == "emergence" and (folder is None or not (Path(folder) / "emergence.json").exists()):
        raise UserError(f"the run in {folder or 'this SAE'} has no emergence record (emergence.json): "
                        "train it with decoder snapshots to colour by emergence")


def density_coloring(density: np.ndarray) -> MapColoring:
    """Decade bins of the log10 density, from the lowest decade present to the highest."""
    lo, hi = math.floor(density.min()), max(math.floor(density.max()), math.floor(density.min()))
    decades = list(range(lo, hi + 1))
    bins = (np.floor(density).astype(int) - lo).clip(0, len(decades) - 1)
    labels = [f"1e{d}–1e{d + 1}" for d in decades]
    return MapColoring(name="density", title="log10 firing density", labels=labels, bin=bins.tolist())


def emergence_coloring(steps: list[int | None]) -> MapColoring:
    """Quantile bins of the emergence step (at most `EMERGENCE_BINS`); never-formed: -1."""
    known = np.array([s for s in steps if s is not None], dtype=np.int64)
    if known.size == 0:
        return MapColoring(name="emergence", title="emergence step", labels=[], bin=[-1] * len(steps))
    edges = np.unique(np.quantile(known, np.linspace(0, 1, EMERGENCE_BINS + 1)).round().astype(np.int64))
    uppers = edges[1:] if len(edges) > 1 else edges  # each bin's last step
    labels, lower = [], int(known.min())
    for upper in uppers.tolist():  # bin i holds the steps in [lower_i, upper_i]
        labels.append(f"{lower}–{upper}" if lower < upper else str(upper))
        lower = upper + 1
    bins = [-1 if s is None else int(np.searchsorted(uppers, s)) for s in steps]
    return MapColoring(name="emergence", title="emergence step", labels=labels,
                       bin=[min(b, len(labels) - 1) for b in bins])


def small_work_threads(values: int):
    """One thread for BLAS and OpenMP while a small map is computed, else as they are.
    On few cores, torch's, scikit-learn's and OpenBLAS's thread pools hand work to
    each other's spinning threads: 1024 x 256 directions took 5 s where one thread
    takes 0.1 s. Large maps gain from the threads, and the hand-offs matter less."""
    import contextlib

    if values > SMALL_WORK:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=1)


def feature_map(sae, method: str = "auto", clusters: int = 12, color: str = "density", seed: int = 0,
                job: Job | None = None, view=None, folder: str | Path | None = None,
                umap_neighbours: int = 15, umap_epochs: int | None = None) -> FeatureMap:
    """The map of `sae`: a spec (folder, release, shipped name) or a loaded sae_lens SAE
    (then `folder` names its folder, for the density and emergence files). `view`: a
    `SaeView` of the same SAE whose index describes the clusters (None: no descriptions)."""
    from engine.saes import load_sae, sae_folder

    job = as_job(job)
    used, note = pick_method(method)
    path = resolve_sae(sae) if isinstance(sae, (str, Path)) else str(folder or "")
    if view is not None:
        sae, folder = view.sae, view.dir
    elif isinstance(sae, (str, Path)):
        folder = sae_folder(path)
        job.progress(0.0, "loading the SAE")
        sae = load_sae(folder)
    folder = Path(folder) if folder else None
    path = path or str(folder or "")
    d_sae, d_in = int(sae.cfg.d_sae), int(sae.cfg.d_in)
    if not 1 <= clusters <= d_sae:
        raise UserError(f"clusters must be between 1 and the SAE's {d_sae} features, not {clusters}")
    density = read_density(folder)
    if density is not None and len(density) != d_sae:
        raise UserError(f"{folder}/sparsity.safetensors has {len(density)} values for {d_sae} features")
    check_color(folder, color)
    emergence = read_emergence(folder, d_sae)
    job.check()
    directions = unit_directions(sae)
    job.progress(0.1, f"projecting {d_sae} directions ({used})")
    explained: list[float] = []
    with small_work_threads(directions.size):
        if used == "pca":
            xy, explained = pca_2d(directions)
        else:
            xy = umap_2d(directions, seed, umap_neighbours, umap_epochs)
        job.check()
        job.progress(0.6, f"clustering into {clusters}")
        labels, centroids = kmeans(directions, clusters, seed)
    job.check()
    job.progress(0.8, "describing the clusters")
    described, why = _describer(view, path)
    out = []
    for c in range(clusters):
        job.check()
        members = np.flatnonzero(labels == c)
        centre = centroids[c] / (np.linalg.norm(centroids[c]) or 1.0)
        central = members[np.argsort(-(directions[members] @ centre), kind="stable")[:CENTRAL]].tolist()
        texts = [described(f) for f in central] if described else [""] * len(central)
        out.append(MapCluster(id=c, size=int(members.size), x=float(xy[members, 0].mean()),
                              y=float(xy[members, 1].mean()), features=central, descriptions=texts,
                              description=" · ".join([t for t in texts if t][:DESCRIBED]),
                              density=None if density is None else float(np.median(density[members]))))
    colorings = ([density_coloring(density)] if density is not None else []) + \
                ([emergence_coloring(emergence)] if emergence is not None else [])
    job.progress(1.0, "mapped")
    return FeatureMap(path=path, d_sae=d_sae, d_in=d_in, method=used, method_note=note,
                      explained_variance=explained, seed=seed, color=color, x=xy[:, 0].tolist(),
                      y=xy[:, 1].tolist(), cluster=labels.tolist(), clusters=out,
                      density=None if density is None else density.tolist(), emergence=emergence,
                      colorings=colorings, described=described is not None, description_note=why)


def _describer(view, path: str):
    """(feature -> description, '') from the view's index, or (None, why not)."""
    if view is None:
        return None, NO_INDEX.format(path=path)
    if view.index is None:
        return None, NO_INDEX.format(path=path) + " (none for this corpus)"
    return view.description, ""


def has_index(folder: Path) -> bool:
    """Whether an index of any corpus lies beside the SAE (worth loading a model to read)."""
    return any((Path(folder) / "index").glob("*.safetensors"))
