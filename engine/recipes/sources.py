"""Offline text sources for the default corpus: Python source code and English prose.

The reference work trained on C4 web text plus Python code. Offline we mix:
- the Python standard library's own source (PSF licence, present wherever Python is),
- Jane Austen's six novels (public domain), from Debian's `r-cran-janeaustenr`.

Notes
- Documents are whole `.py` files and novel chapters, so document boundaries are
  meaningful (a top example never straddles two files).
- The Austen data ships as an R lazy-load database (`Rdata.rdb`/`.rdx`): zlib
  blocks of R's XDR serialisation. Each novel is one character vector, which the
  small reader below decodes without R.
- Everything is sorted so the corpus is identical on every machine with the same
  Python version (recorded in the provenance).
"""

from __future__ import annotations

import gzip
import hashlib
import re
import struct
import subprocess
import sys
import sysconfig
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

AUSTEN_DIR = Path("/usr/lib/R/site-library/janeaustenr/data")
AUSTEN_CACHE = Path.home() / ".cache" / "saescope" / "janeaustenr"
_SKIP_PARTS = {"site-packages", "test", "tests", "idle_test", "__pycache__"}


@dataclass(frozen=True)
class Document:
    """One unit of text with a stable id (used for the held-out split)."""

    doc_id: str
    source: str
    text: str


def python_stdlib_documents() -> list[Document]:
    """Every non-test `.py` file of this interpreter's standard library, sorted by path."""
    root = Path(sysconfig.get_paths()["stdlib"])
    docs = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if _SKIP_PARTS & set(rel.parts) or rel.parts[0].startswith("test"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        if text.strip():
            docs.append(Document(f"stdlib/{rel.as_posix()}", "python-stdlib", text))
    return docs


def _austen_data_dir() -> Path:
    """Find the janeaustenr data folder, extracting the Debian package if needed."""
    for d in (AUSTEN_DIR, AUSTEN_CACHE / "usr/lib/R/site-library/janeaustenr/data"):
        if (d / "Rdata.rdb").exists():
            return d
    # `apt-get download` needs no root and does not pull R itself.
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["apt-get", "download", "r-cran-janeaustenr"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        deb = next(Path(tmp).glob("r-cran-janeaustenr*.deb"))
        AUSTEN_CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(AUSTEN_CACHE)], check=True)
    return AUSTEN_CACHE / "usr/lib/R/site-library/janeaustenr/data"


def _r_character_vector(blob: bytes) -> list[str]:
    """Decode one XDR-serialised R character vector (STRSXP of CHARSXPs)."""
    if blob[:2] != b"X\n":
        raise ValueError("not an R XDR serialisation")
    version = struct.unpack(">I", blob[2:6])[0]
    pos = 14
    if version == 3:  # version 3 adds the native encoding name
        pos += 4 + struct.unpack(">I", blob[pos:pos + 4])[0]
    sexptype = struct.unpack(">I", blob[pos:pos + 4])[0] & 0xFF
    if sexptype != 16:
        raise ValueError(f"expected a character vector, got SEXP type {sexptype}")
    n = struct.unpack(">i", blob[pos + 4:pos + 8])[0]
    pos += 8
    lines = []
    for _ in range(n):
        length = struct.unpack(">i", blob[pos + 4:pos + 8])[0]
        pos += 8
        if length < 0:  # NA_character_
            lines.append("")
            continue
        lines.append(blob[pos:pos + length].decode("utf-8", errors="replace"))
        pos += length
    return lines


def austen_documents() -> list[Document]:
    """Jane Austen's six novels, one document per chapter."""
    data = _austen_data_dir()
    index = gzip.decompress((data / "Rdata.rdx").read_bytes())
    names = [n.decode() for n in re.findall(rb"[a-z]{4,}", index)
             if n not in (b"names", b"variables", b"references", b"compressed")]
    rdb = (data / "Rdata.rdb").read_bytes()
    docs, pos = [], 0
    for name in names:
        inflater = zlib.decompressobj()
        blob = inflater.decompress(rdb[pos + 4:])
        pos = len(rdb) - len(inflater.unused_data)
        chapters, current = [], []
        for line in _r_character_vector(blob):
            if re.match(r"^(CHAPTER|Chapter) [0-9IVXLC]+", line) and current:
                chapters.append("\n".join(current).strip())
                current = []
            current.append(line)
        chapters.append("\n".join(current).strip())
        docs += [Document(f"austen/{name}/{i:03d}", "jane-austen", c)
                 for i, c in enumerate(chapters) if c]
    return docs


def is_held_out(doc_id: str, every: int = 20) -> bool:
    """Stable 1-in-`every` split by a hash of the document id (not by position)."""
    return int(hashlib.sha1(doc_id.encode()).hexdigest(), 16) % every == 0


def provenance() -> dict:
    """What the corpus is made of, for the model card."""
    return {
        "python-stdlib": {
            "what": f"Python {sys.version.split()[0]} standard library source, tests excluded",
            "licence": "PSF-2.0",
            "path": sysconfig.get_paths()["stdlib"],
        },
        "jane-austen": {
            "what": "Emma, Mansfield Park, Northanger Abbey, Persuasion, Pride and Prejudice, "
                    "Sense and Sensibility (Debian package r-cran-janeaustenr 1.0.0)",
            "licence": "public domain (texts); package MIT",
        },
        "held_out": "documents whose sha1(doc_id) % 20 == 0",
    }

