"""Train Hour-LLaVA: ``python launch/train.py --config configs/train/tiny.yaml --workdir /tmp/run [--set k=v ...]``
(``hourllava_jax/cli/train.py``; docs/training.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from hourllava_jax.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
