"""``hourllava-demo`` from a clone: ``python launch/demo.py [--quick] [--workdir DIR]`` (docs/demo.md)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from hourllava_jax.cli.demo import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
