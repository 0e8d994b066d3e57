"""Writes the synthetic long-video dataset (``hourllava-synth``; ``hourllava_jax/cli/synth.py``, docs/data.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a clone without installing

from hourllava_jax.cli.synth import main  # noqa: E402

if __name__ == "__main__":
    main()
