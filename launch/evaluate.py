"""Evaluate a checkpoint on a benchmark from a clone: ``python launch/evaluate.py --benchmark videomme
--root /data/Video-MME --checkpoint ckpt/ --out runs/eval`` (``hourllava-eval``; docs/evaluation.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hourllava_jax.cli.evaluate import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
