"""The feature map (engine/geometry.py): PCA against an independent numpy SVD, clusters
that partition the features, density read from the sparsity file, emergence colouring,
descriptions only from an index, bad input; `saescope map` and one `sae.map` round trip.

Most tests use a stand-in SAE (just `W_dec` and `cfg`) or the shipped
`weights/saes/mlp_out-topk`, with PCA: UMAP compiles with numba for about 20 s.
"""

from __future__ import annotations

import json
import struct
from types import SimpleNamespace

import msgspec
import numpy as np
import pytest
import torch

from engine.errors import UserError
from engine.geometry import feature_map, pca_2d, umap_available
from engine.paths import WEIGHTS_DIR
from engine.protocol import FeatureMap, decode_result
from tests.conftest import run_saescope

SHIPPED = WEIGHTS_DIR / "saes" / "mlp_out-topk"


def stand_in(d_sae=64, d_in=16, seed=0):
    """What `feature_map` reads of an SAE: its decoder and sizes."""
    g = torch.Generator().manual_seed(seed)
    return SimpleNamespace(W_dec=torch.randn(d_sae, d_in, generator=g), cfg=SimpleNamespace(d_sae=d_sae, d_in=d_in))


@pytest.fixture(scope="module")
def shipped_map() -> FeatureMap:
    return feature_map("mlp_out-topk", method="pca", clusters=8)


def test_pca_is_the_projection_on_the_top_right_singular_vectors(shipped_map):
    from safetensors.numpy import load_file
    from threadpoolctl import threadpool_limits

    w = load_file(str(SHIPPED / "sae_weights.safetensors"))["W_dec"].astype(np.float64)
    u = w / np.linalg.norm(w, axis=1, keepdims=True)
    centred = u - u.mean(axis=0)
    with threadpool_limits(limits=1):  # see `small_work_threads`: 5 s instead of 0.05 s on 2 busy cores
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    got = np.column_stack([shipped_map.x, shipped_map.y])
    for axis in range(2):  # each axis up to its sign
        sign = np.sign(expected[:, axis] @ got[:, axis])
        np.testing.assert_allclose(got[:, axis], sign * expected[:, axis], atol=1e-8)
    np.testing.assert_allclose(shipped_map.explained_variance, (s[:2] ** 2 / (s ** 2).sum()), rtol=1e-8)
    assert shipped_map.method == "pca" and shipped_map.method_note == ""
    assert shipped_map.path == str(SHIPPED) and (shipped_map.d_sae, shipped_map.d_in) == (1024, 256)


def test_pca_signs_are_fixed():
    x = np.random.default_rng(0).normal(size=(50, 6))
    a, _ = pca_2d(x)
    b, _ = pca_2d(x[::-1].copy())  # the same points in another order: the same axes
    np.testing.assert_allclose(a[::-1], b, atol=1e-10)


def test_clusters_partition_the_features(shipped_map):
    m = shipped_map
    assert len(m.cluster) == m.d_sae and set(m.cluster) == set(range(8))
    assert [c.id for c in m.clusters] == list(range(8))
    sizes = [c.size for c in m.clusters]
    assert sum(sizes) == m.d_sae and sizes == sorted(sizes, reverse=True)
    labels = np.array(m.cluster)
    for c in m.clusters:
        assert c.size == (labels == c.id).sum()
        assert len(c.features) == 5 and all(labels[f] == c.id for f in c.features)
        assert c.x == pytest.approx(np.mean(np.array(m.x)[labels == c.id]))


def test_density_is_the_sparsity_file(shipped_map):
    from safetensors.numpy import load_file

    sparsity = load_file(str(SHIPPED / "sparsity.safetensors"))["sparsity"]
    np.testing.assert_allclose(shipped_map.density, sparsity, rtol=1e-6)
    coloring = shipped_map.colorings[0]
    assert [c.name for c in shipped_map.colorings] == ["density"] and len(coloring.bin) == 1024
    lowest = int(np.floor(sparsity.min()))
    assert coloring.bin == (np.floor(sparsity).astype(int) - lowest).tolist()
    assert coloring.labels[0] == f"1e{lowest}–1e{lowest + 1}"
    labels = np.array(shipped_map.cluster)
    assert shipped_map.clusters[0].density == pytest.approx(np.median(sparsity[labels == 0]), rel=1e-6)


def test_emergence_coloring_from_the_runs_record(tmp_path):
    steps = [None if i % 9 == 0 else 10 * i for i in range(64)]
    (tmp_path / "emergence.json").write_text(json.dumps({"emergence_step": steps}))
    m = feature_map(stand_in(), method="pca", clusters=4, color="emergence", folder=tmp_path)
    assert m.color == "emergence" and m.emergence == steps and m.density is None
    (coloring,) = m.colorings
    assert coloring.name == "emergence" and len(coloring.labels) == 5
    assert [b for b, s in zip(coloring.bin, steps) if s is None] == [-1] * 8
    known = [(s, b) for s, b in zip(steps, coloring.bin) if s is not None]
    assert [b for _, b in sorted(known)] == sorted(b for _, b in known)  # bins follow the steps
    assert min(b for _, b in known) == 0 and max(b for _, b in known) == 4


def test_descriptions_come_only_from_an_index(tmp_path):
    sae = stand_in()
    bare = feature_map(sae, method="pca", clusters=3, folder=tmp_path)
    assert not bare.described and "saescope index" in bare.description_note
    assert all(c.descriptions == [""] * len(c.features) and c.description == "" for c in bare.clusters)
    view = SimpleNamespace(sae=sae, dir=tmp_path, index=object(), description=lambda f: f"'tok{f}'")
    m = feature_map(sae, method="pca", clusters=3, view=view)
    assert m.described and m.description_note == ""
    for c in m.clusters:
        assert c.descriptions == [f"'tok{f}'" for f in c.features]
        assert c.description == " · ".join(c.descriptions[:3])


def test_bad_input_is_a_user_error(tmp_path, monkeypatch):
    sae = stand_in()
    with pytest.raises(UserError, match="no emergence record"):
        feature_map(sae, method="pca", color="emergence", folder=tmp_path)
    with pytest.raises(UserError, match="between 1 and the SAE's 64"):
        feature_map(sae, method="pca", clusters=65, folder=tmp_path)
    with pytest.raises(UserError, match="between 1"):
        feature_map(sae, method="pca", clusters=0, folder=tmp_path)
    with pytest.raises(UserError, match="unknown map method"):
        feature_map(sae, method="tsne", folder=tmp_path)
    with pytest.raises(UserError, match="unknown colouring"):
        feature_map(sae, method="pca", color="loss", folder=tmp_path)
    with pytest.raises(UserError, match="shipped: .*mlp_out-topk"):
        feature_map("mlp_out-topq", method="pca")
    (tmp_path / "emergence.json").write_text(json.dumps({"emergence_step": [1, 2]}))
    with pytest.raises(UserError, match="one step .* per feature, 64"):
        feature_map(sae, method="pca", folder=tmp_path)
    monkeypatch.setattr("engine.geometry.umap_available", lambda: False)
    with pytest.raises(UserError, match="umap-learn"):
        feature_map(sae, method="umap", folder=tmp_path)
    assert feature_map(sae, method="auto", clusters=2).method_note == "auto: umap-learn is not installed, so PCA"


def test_render_map_draws_points_legend_and_clusters(shipped_map):
    from rich.console import Console

    from engine.render_map import render_map

    console = Console(width=100, record=True)
    console.print(render_map(shipped_map, width=90, height=20))
    text = console.export_text()
    assert "PC1" in text and "log10 firing density" in text and "8 clusters" in text
    assert "⠀" in text or any(ch in text for ch in "⠁⠂⠄⡀⢀")  # braille points
    assert "saescope index" in text  # no view was given: the clusters are not described


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_cli_map_json_and_png(tmp_path):
    png = tmp_path / "figs" / "map.png"
    png.parent.mkdir()
    r = run_saescope("map", "mlp_out-topk", "--method", "pca", "--clusters", "6", "--json", "--png", str(png))
    assert r.returncode == 0, r.stderr
    m = msgspec.json.decode(r.stdout, type=FeatureMap)
    assert m.method == "pca" and len(m.x) == 1024 and len(m.clusters) == 6
    assert m.described and all(c.description for c in m.clusters)  # the shipped SAE has an index
    width, height = png_size(png)
    assert width > 400 and height > 400
    assert [p.name for p in png.parent.iterdir()] == ["map.png"]  # no temporary file left


def test_cli_map_refuses_bad_input():
    r = run_saescope("map", "no-such-sae", "--method", "pca")
    assert r.returncode == 2 and "no SAE folder or shipped SAE named 'no-such-sae'" in r.stderr
    r = run_saescope("map", "mlp_out-topk", "--method", "pca", "--color", "emergence")
    assert r.returncode == 2 and "no emergence record" in r.stderr
    r = run_saescope("map", "mlp_out-topk", "--method", "bogus")
    assert r.returncode == 2 and "bad option" in r.stderr


def test_sae_map_over_the_protocol(tmp_path):
    from safetensors.numpy import save_file

    from tests.engine.engine_proc import EngineProcess
    from tests.engine.test_inspect import make_sae

    folder = make_sae(tmp_path / "sae", d_sae=48)
    save_file({"sparsity": np.linspace(-4, -1, 48).astype(np.float32)}, str(folder / "sparsity.safetensors"))
    (folder / "emergence.json").write_text(json.dumps({"emergence_step": list(range(48))}))
    engine = EngineProcess()
    try:
        engine.request("m1", "sae.map", path=str(folder), method="pca", clusters=4, color="emergence")
        reply, events = engine.reply("m1")
        assert reply["status"] == "ok", reply
        m = decode_result("sae.map", reply["result"])
        assert isinstance(m, FeatureMap) and m.color == "emergence" and len(m.x) == 48
        assert [c.name for c in m.colorings] == ["density", "emergence"] and m.emergence == list(range(48))
        assert not m.described and "saescope index" in m.description_note  # it has no index
        assert events and events[-1]["data"]["fraction"] == 1.0
        engine.request("m2", "sae.map", path=str(tmp_path / "nothing"))
        assert "is not an SAE folder" in engine.reply("m2")[0]["error"]
    finally:
        engine.close()


@pytest.mark.slow
@pytest.mark.skipif(not umap_available(), reason="umap-learn is not installed")
def test_umap_path_runs():
    m = feature_map(stand_in(d_sae=60), method="auto", clusters=3, umap_neighbours=5, umap_epochs=20)
    assert m.method == "umap" and m.method_note == "auto: umap-learn is installed" and m.explained_variance == []
    assert len(m.x) == 60 and np.isfinite(m.x).all() and np.isfinite(m.y).all()
