"""``hourllava-answer``: ask Hour-LLaVA about a video from the command line, answer streamed.

    python launch/answer.py --checkpoint ckpt/ --video talk.mp4 --question "What is on the whiteboard?"

``--question`` may be repeated: the video is decoded and encoded once, every question reuses it
(and, with ``--cache-dir``, later runs reuse it too). The answer goes to stdout token by token;
frames, timings and cache hits go to stderr. A missing or unreadable video exits with status 2
and a message naming the file.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from hourllava_jax.parallel.host_heap import keep_heap_for_cpu


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="hourllava-answer", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True, help="Hour-LLaVA Hugging Face directory")
    p.add_argument("--video", type=Path, required=True)
    p.add_argument("--question", action="append", required=True, help="repeat to ask several questions")
    p.add_argument("--tokenizer", type=Path, default=None, help="tokenizer directory (default: the checkpoint)")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (with --temperature > 0)")
    p.add_argument("--cache-dir", type=Path, default=None, help="on-disk cache of encoded videos")
    p.add_argument("--max-frames", type=int, default=None, help="cap on sampled frames (default: none, design §3)")
    p.add_argument("--forgetting", choices=("uniform", "random"), default="uniform", help="spatial forgetting mode")
    p.add_argument("--forgetting-seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="parameter and compute dtype")
    p.add_argument("--quiet", action="store_true", help="no frame/timing report on stderr")
    a = p.parse_args(argv)
    if a.max_new_tokens < 1:
        p.error("--max-new-tokens must be >= 1")
    if a.temperature < 0 or not 0 < a.top_p <= 1:
        p.error("need --temperature >= 0 and 0 < --top-p <= 1")
    return a


def main(argv: Sequence[str] | None = None) -> int:
    keep_heap_for_cpu()
    a = parse_args(argv)
    from hourllava_jax.data.errors import DataError
    from hourllava_jax.infer.pipeline import VideoQA

    def log(msg: str) -> None:
        if not a.quiet:
            print(msg, file=sys.stderr, flush=True)

    qa = VideoQA.from_pretrained(a.checkpoint, a.tokenizer, dtype=a.dtype, cache_dir=a.cache_dir, max_frames=a.max_frames,
                                 forgetting=a.forgetting, forgetting_seed=a.forgetting_seed)  # fmt: skip
    for q in a.question:
        try:
            ans = qa.answer(a.video, q, max_new_tokens=a.max_new_tokens, temperature=a.temperature, top_p=a.top_p,
                            seed=a.seed, stream=lambda piece: print(piece, end="", flush=True))  # fmt: skip
        except DataError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        print(flush=True)
        t = ans.timestamps
        log(f"[{len(t)} frames {t[0]:.2f}..{t[-1]:.2f} s of {ans.duration:.2f} s; features: {ans.source}; "
            f"{len(ans.token_ids)} tokens{'' if ans.finished else ' (max-new-tokens reached)'}; "
            + ", ".join(f"{k} {v:.2f} s" for k, v in ans.seconds.items()) + "]")
    return 0


if __name__ == "__main__":
    sys.exit(main())
