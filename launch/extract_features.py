"""Pre-extract pooled SigLIP features of a video tree into a feature store.

    python launch/extract_features.py --videos DATA/videos --out DATA/feature_store --model CKPT_DIR \\
        [--records FILE] [--min-frames 128] [--chunk 64] [--dtype float32] [--process-index I --process-count P]

Same as the ``hourllava-extract`` console script (``hourllava_jax/cli/extract.py``; docs/data.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from a clone: make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hourllava_jax.cli.extract import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
