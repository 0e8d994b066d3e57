"""Ask Hour-LLaVA a question about a video; the answer streams to the console.

    python launch/answer.py --checkpoint ckpt/ --video talk.mp4 --question "What happens at the end?" \\
        [--tokenizer DIR] [--max-new-tokens N] [--temperature T --top-p P --seed S] [--cache-dir DIR]

Same as the ``hourllava-answer`` console script (``hourllava_jax/infer/cli.py``; docs/inference.md).
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script from a clone: make the package importable without installing it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hourllava_jax.infer.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
