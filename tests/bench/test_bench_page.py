"""Feature-page latency (issue 12): `feature.page` for 100 random features of
`weights/saes/mlp_out-topk` as a client sees it over the stdio protocol, beside the
engine-side time of the same pages (made, typed and encoded in this process).
Goal: p95 under 20 ms as the client sees it.
"""

import os
import random
import statistics
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take

SAE = os.environ.get("BENCH_SAE", str(REPO / "weights" / "saes" / "mlp_out-topk"))
N_FEATURES, SEED, GOAL_P95_MS = 100, 0, 20.0


def _percentiles(samples_ms: list[float]) -> dict:
    s = sorted(samples_ms)
    return {"median_ms": round(statistics.median(s), 2), "p95_ms": round(s[int(0.95 * (len(s) - 1))], 2),
            "max_ms": round(s[-1], 2), "n": len(s)}


def _client_times() -> tuple[list[int], float, list[float]]:
    """The features (drawn once the SAE's width is known), the first page's round trip
    (it decodes the vocabulary), then each feature's."""
    from tests.engine.engine_proc import EngineProcess

    engine = EngineProcess()
    try:
        engine.request("load", "model.load")
        engine.reply("load", timeout=120)
        engine.request("open", "sae.open", path=SAE)
        reply, _ = engine.reply("open", timeout=900)  # builds the index when it is missing or stale
        assert reply["status"] == "ok", reply
        features = random.Random(SEED).sample(range(reply["result"]["d_sae"]), N_FEATURES)

        def page(rid: str, feature: int) -> float:
            t0 = time.perf_counter()
            engine.request(rid, "feature.page", path=SAE, feature=feature, top=10)
            reply, _ = engine.reply(rid)
            dt = (time.perf_counter() - t0) * 1000
            assert reply["status"] == "ok", reply
            return dt

        first = page("first", features[0])
        return features, first, [page(f"p{i}", f) for i, f in enumerate(features)]
    finally:
        engine.close()


def _engine_times(features: list[int]) -> list[float]:
    """The same pages inside one process: made by the view, typed and encoded as the
    server does (`feature.page`'s handler, then the reply's JSON)."""
    import msgspec

    from engine.inspect import SaeView
    from engine.models import load_model
    from engine.protocol import FeaturePage, Reply, encode

    view = SaeView(load_model("default", device="cpu"), SAE)
    view.feature_page(features[0])  # the vocabulary, as in the client's first page
    times = []
    for f in features:
        t0 = time.perf_counter()
        encode(Reply(f"p{f}", "ok", result=msgspec.convert(view.feature_page(f, top=10), FeaturePage)))
        times.append((time.perf_counter() - t0) * 1000)
    return times


def test_feature_page_latency(report):
    features, first, client = _client_times()
    engine = _engine_times(features)
    figures = {"sae": SAE, "features": N_FEATURES, "seed": SEED, "client": _percentiles(client),
               "engine": _percentiles(engine), "first_page_ms": round(first, 1), "goal_client_p95_ms": GOAL_P95_MS}
    report("feature_page", figures)
