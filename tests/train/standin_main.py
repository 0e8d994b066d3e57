"""``launch/train.py`` with the stand-in model: the subprocess the resume and multi-process tests run."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from standin import BUILDERS  # noqa: E402

from hourllava_jax.cli.train import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(builders=BUILDERS))
