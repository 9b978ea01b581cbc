"""The SAEs and the engine the Inspector and Ablation tests share (one per session).

`sae_engine` starts a real engine listening on loopback with the default model,
and makes a weights folder for `SAESCOPE_WEIGHTS`: links to the shipped model and
corpus, and copies of the default SAEs (weights/saes/resid_mid-topk and
mlp_out-topk), each given a small index by that engine. Test modules import the
fixture by name.

Notes
- Copies, not the shipped folders: `sae.open` writes its index beside the SAE,
  and a test's small index must never replace a user's full one.
- Pilot tests attach to this engine over TCP, so no test waits for a model load
  of its own; snapshot and tmux tests start their own engine (their screens name
  it), which reads the same folder through `SAESCOPE_WEIGHTS`.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights"
UP, DOWN = "resid_mid-topk", "mlp_out-topk"
INDEX_TOKENS = 128 * 64
TOKEN = "s3cret"
SAE_FILES = ("cfg.json", "sae_weights.safetensors")
PROMPT = "def __init__(self, name):"


@dataclass
class SaeSetup:
    address: str  # HOST:PORT of the engine, token TOKEN
    weights: Path  # a folder for SAESCOPE_WEIGHTS

    @property
    def up(self) -> str:
        return str(self.weights / "saes" / UP)

    @property
    def down(self) -> str:
        return str(self.weights / "saes" / DOWN)


async def _prepare(address: str, weights: Path) -> None:
    from tui.client import EngineClient
    from tui.target import EngineTarget

    client = EngineClient(EngineTarget.tcp(address, token=TOKEN))
    await client.start()
    try:
        saes = weights / "saes"
        for name in (UP, DOWN):
            await client.call("sae.open", {"path": str(saes / name), "tokens": INDEX_TOKENS})
    finally:
        await client.close()


_shared: list[SaeSetup] = []


@pytest.fixture(scope="session")
def sae_engine(tmp_path_factory):
    if _shared:  # each importing module has its own copy of the fixture: the first one's is shared
        yield _shared[0]
        return
    weights = tmp_path_factory.mktemp("weights")
    for name in ("mini-gelu-1l", "corpus"):
        (weights / name).symlink_to(SHIPPED / name)
    for name in (UP, DOWN):
        (weights / "saes" / name).mkdir(parents=True)
        for f in SAE_FILES:
            shutil.copy2(SHIPPED / "saes" / name / f, weights / "saes" / name / f)
    proc = subprocess.Popen([sys.executable, "-m", "engine", "engine", "serve", "--listen", "127.0.0.1:0",
                             "--token", TOKEN, "--model", "default"], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stderr:  # the engine prints its address once it listens
            if m := re.search(r"listening on (127\.0\.0\.1:\d+)", line):
                break
        else:
            raise AssertionError("the engine did not start listening")
        address = m.group(1)
        threading.Thread(target=proc.stderr.read, daemon=True).start()  # a full pipe would stall the engine
        asyncio.run(_prepare(address, weights))
        _shared.append(SaeSetup(address, weights))
        yield _shared[0]
    finally:
        _shared.clear()
        proc.kill()
        proc.wait()


async def engine_link(sae_engine, posted: list):
    """A connected `EngineLink` to the shared engine, its messages appended to `posted`."""
    from tui.link import EngineLink
    from tui.target import EngineTarget

    link = EngineLink(EngineTarget.tcp(sae_engine.address, token=TOKEN), "default", posted.append)
    await link.connect()
    await link.model_ready()
    return link


def of_kind(posted: list, kind) -> list:
    """The posted messages of one type."""
    return [m for m in posted if isinstance(m, kind)]
