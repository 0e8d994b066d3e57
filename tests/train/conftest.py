"""Makes ``launch/`` (the stand-in model lives in ``launch/train.py``) and this folder's
``train_harness`` importable under ``--import-mode=importlib``."""

from __future__ import annotations

import sys
from pathlib import Path

_HERE = Path(__file__).resolve().parent
for p in (_HERE, _HERE.parents[1]):
    if str(p) not in sys.path:
        sys.path.insert(0, str(p))
