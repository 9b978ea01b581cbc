"""Where the embedded defaults live, and where derived files are cached.

`SAESCOPE_WEIGHTS` overrides the folder (for tests that build their own); the
default is `weights/` at the top of the repository, next to this package.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("SAESCOPE_WEIGHTS", REPO_ROOT / "weights"))
DEFAULT_MODEL_DIR = WEIGHTS_DIR / "mini-gelu-1l"
CORPUS_DIR = WEIGHTS_DIR / "corpus"


def cache_dir() -> Path:
    """Where derived files are cached (converted models, corpora in other tokenizers):
    `$SAESCOPE_CACHE`, else `$XDG_CACHE_HOME/saescope`, else `~/.cache/saescope`."""
    if os.environ.get("SAESCOPE_CACHE"):
        return Path(os.environ["SAESCOPE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "saescope"

