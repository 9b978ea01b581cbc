"""Round-trip latency of `ping` and `predict` through the engine's stdio pipe (issue: engine + TUI).

Also how long the app takes from launch to a connected screen with the model loaded,
measured through Textual's pilot on the real app and a real engine subprocess.
"""

import asyncio
import statistics
import time

from tests.engine.engine_proc import EngineProcess

import pytest

pytestmark = pytest.mark.timeout(0)  # benchmarks take as long as they take


def _percentiles(samples_ms: list[float]) -> dict:
    s = sorted(samples_ms)
    return {"median_ms": round(statistics.median(s), 3), "p95_ms": round(s[int(0.95 * (len(s) - 1))], 3),
            "n": len(s)}


def test_round_trip_latency(report):
    engine = EngineProcess()
    engine.request("load", "model.load", spec="default")
    engine.reply("load", timeout=120)
    figures = {}
    for method, params, n in (("ping", {}, 500), ("predict", {"text": "def __init__(self", "top": 10}, 200)):
        samples = []
        for i in range(n):
            rid = f"{method}-{i}"
            t0 = time.perf_counter()
            engine.request(rid, method, **params)
            engine.reply(rid)
            samples.append((time.perf_counter() - t0) * 1000)
        figures[method] = _percentiles(samples[10:])  # drop warm-up
    engine.close()
    report("protocol_latency", figures)


def test_app_launch_to_model_loaded(report):
    from tui.app import SaescopeApp
    from tui.target import EngineTarget

    async def launch() -> float:
        t0 = time.perf_counter()
        app = SaescopeApp(EngineTarget.local(), "default")
        async with app.run_test(size=(80, 24)) as pilot:
            while app.link.model is None:
                await pilot.pause(0.02)
                if app.link.model_error or time.perf_counter() - t0 > 120:
                    raise RuntimeError(f"model never loaded: {app.link.model_error}")
            return time.perf_counter() - t0

    times = [asyncio.run(launch()) for _ in range(3)]
    report("app_launch", {"launch_to_model_loaded_s": [round(t, 2) for t in times],
                          "median_s": round(statistics.median(times), 2)})
