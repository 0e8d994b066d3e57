"""Makes the repository root and this folder (``train_harness``, the stand-in model in
``standin.py``) importable under ``--import-mode=importlib``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for p in (_HERE, _HERE.parents[1]):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
