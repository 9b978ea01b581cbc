"""Where the embedded defaults live.

`SAESCOPE_WEIGHTS` overrides the folder (for tests that build their own); the
default is `weights/` at the top of the repository, next to this package.
"""

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
WEIGHTS_DIR = Path(os.environ.get("SAESCOPE_WEIGHTS", REPO_ROOT / "weights"))
DEFAULT_MODEL_DIR = WEIGHTS_DIR / "mini-gelu-1l"
CORPUS_DIR = WEIGHTS_DIR / "corpus"
