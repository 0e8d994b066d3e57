"""Runs one shard of items through an answerer, durably and resumably.

Each shard appends one JSON line per finished item to its own file
`<out>/results/<benchmark>/shard-<i>-of-<n>.jsonl`, with flush + fsync per line, so a kill
loses at most the item in flight. On restart every result file of the benchmark is read (not
only this shard's, so a changed process count does not redo work), a truncated or corrupt line
is ignored (and counted), and finished items are skipped. Nothing here is fatal per item: a
missing video or an answerer exception becomes a result line with `status: "error"` and the
reason; only KeyboardInterrupt/SystemExit stop the run (those are the "kill" of the tests).

A result line (dict): key, benchmark, id, video, video_id, categories, answer, n_options, mode,
status ("ok" | "error"), reason_code, reason, raw_output, frame_indices, timestamps,
option_loglikelihoods, predicted (letter | None), rule (which scoring rule decided),
parse_failed, correct, seconds.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from hourllava_jax.eval.items import ANSWERER_ERROR, EvalItem, MISSING_VIDEO, Prediction
from hourllava_jax.eval import scoring

Mode = Literal["generate", "loglikelihood"]


def results_dir(out_dir: str | Path, benchmark: str) -> Path:
    return Path(out_dir) / "results" / benchmark


def shard_path(out_dir: str | Path, benchmark: str, shard: int, num_shards: int) -> Path:
    return results_dir(out_dir, benchmark) / f"shard-{shard:05d}-of-{num_shards:05d}.jsonl"


def read_results(path: Path) -> tuple[list[dict[str, Any]], int]:
    """(records, number of unreadable lines) of one results file; a half-written last line
    (killed mid-write) is one unreadable line, not an error."""
    records, bad = [], 0
    if not path.is_file():
        return records, bad
    with path.open("rb") as f:
        for raw in f:
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError):
                bad += 1
                continue
            if isinstance(rec, dict) and isinstance(rec.get("key"), str):
                records.append(rec)
            else:
                bad += 1
    return records, bad


def finished_keys(directory: Path, retry_errors: bool = False) -> set[str]:
    """Keys with a result in any shard file of `directory` (errors excluded if retry_errors)."""
    done: set[str] = set()
    for path in sorted(directory.glob("*.jsonl")):
        for rec in read_results(path)[0]:
            if rec.get("status") == "ok" or not retry_errors:
                done.add(rec["key"])
    return done


class _AppendLog:
    """Append-only JSON Lines file, one durable line per record."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = path.open("ab")
        # A killed writer may have left a line without its newline: start a fresh line so the
        # next record is not glued to the broken one.
        if self._f.tell() > 0:
            with path.open("rb") as r:
                r.seek(-1, os.SEEK_END)
                if r.read(1) != b"\n":
                    self._f.write(b"\n")

    def write(self, record: dict[str, Any]) -> None:
        self._f.write(json.dumps(record, ensure_ascii=False, allow_nan=False).encode("utf-8") + b"\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


def _finite(xs: Iterable[float] | None) -> list[float | None] | None:
    # JSON has no NaN/inf; None keeps the position (argmax treats it as NaN = -inf).
    return None if xs is None else [float(x) if math.isfinite(float(x)) else None for x in xs]


def _predict(item: EvalItem, answerer: Any, mode: Mode) -> Prediction:
    """Calls the answerer and checks the shape of what it returned (raises on a bad return)."""
    if mode == "loglikelihood":
        out = answerer.option_loglikelihoods(item)
        pred = out if isinstance(out, Prediction) else Prediction("", option_loglikelihoods=tuple(out))
        n = None if pred.option_loglikelihoods is None else len(pred.option_loglikelihoods)
        if n != len(item.options):
            raise ValueError(f"expected {len(item.options)} option log-likelihoods, got {n}")
        return pred
    pred = answerer.answer(item)
    if not isinstance(pred, Prediction) or not isinstance(pred.text, str):
        raise TypeError(f"answer() must return a Prediction with text: str, got {pred!r:.200}")
    return pred


def _prediction_fields(pred: Prediction) -> dict[str, Any]:
    """The JSON-safe record fields of a prediction (raises on non-numeric frames/times)."""
    return {"raw_output": pred.text, "frame_indices": [int(i) for i in pred.frame_indices],
            "timestamps": _finite(pred.timestamps), "option_loglikelihoods": _finite(pred.option_loglikelihoods)}


def answer_item(item: EvalItem, answerer: Any, mode: Mode = "generate") -> dict[str, Any]:
    """Answers and scores one item; every failure is captured in the returned record."""
    rec: dict[str, Any] = {
        "key": item.key, "benchmark": item.benchmark, "id": item.id, "video": item.video,
        "video_id": item.video_id, "categories": dict(item.categories), "answer": item.answer,
        "n_options": len(item.options), "mode": mode, "status": "ok", "reason_code": None, "reason": None,
        "raw_output": None, "frame_indices": [], "timestamps": [], "option_loglikelihoods": None,
        "predicted": None, "rule": None, "parse_failed": False, "correct": False, "seconds": 0.0,
    }
    t0 = time.perf_counter()
    if not Path(item.video).is_file():
        rec.update(status="error", reason_code=MISSING_VIDEO, reason=f"video not found: {item.video}")
        return rec
    try:
        pred = _predict(item, answerer, mode)
        fields = _prediction_fields(pred)
    except Exception as e:  # per-item: a corrupt video or a model failure must not stop the run
        code = getattr(e, "reason", None)
        rec.update(status="error", reason_code=code if isinstance(code, str) else ANSWERER_ERROR,
                   reason=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
        return rec
    rec.update(fields, seconds=time.perf_counter() - t0)
    if mode == "loglikelihood":
        ll = [math.nan if v is None else v for v in rec["option_loglikelihoods"]]
        letter, rule = scoring.argmax_letter(ll), "argmax"
    else:
        letter, rule = scoring.extract(pred.text, item.options)
    rec.update(predicted=letter, rule=rule, parse_failed=letter is None,
               correct=letter is not None and letter == item.answer)
    return rec


@dataclasses.dataclass(frozen=True)
class ShardSummary:
    """Counts of one `run_shard` call (all int)."""

    n_items: int
    n_skipped: int
    n_answered: int
    n_errors: int


def run_shard(items: Sequence[EvalItem], answerer: Any, path: str | Path, *, mode: Mode = "generate",
              retry_errors: bool = False, desc: str | None = None, progress: bool = True) -> ShardSummary:
    """Answers the unfinished `items` (already grouped by video, see sharding) into `path`.

    Args:
      items: this shard's items.
      answerer: an `Answerer` (and, for mode "loglikelihood", `option_loglikelihoods`). If it
        has `release_video(video: str)`, that is called after the last question of a video.
      path: this shard's JSON Lines file; its directory holds the other shards' files too.
      mode: "generate" (score the text) or "loglikelihood" (argmax over options).
      retry_errors: answer again items whose earlier result was an error.
      desc: progress bar label.
    """
    path = Path(path)
    done = finished_keys(path.parent, retry_errors)
    todo = [x for x in items if x.key not in done]
    videos = list(dict.fromkeys(x.group for x in items))
    pending = list(dict.fromkeys(x.group for x in todo))
    log = _AppendLog(path)
    n_err = 0
    bar = tqdm(total=len(videos), initial=len(videos) - len(pending), unit="video", desc=desc or path.stem,
               disable=not progress, dynamic_ncols=True)
    try:
        for n, item in enumerate(todo):
            rec = answer_item(item, answerer, mode)
            n_err += rec["status"] != "ok"
            log.write(rec)
            last_of_video = n + 1 == len(todo) or todo[n + 1].group != item.group
            if last_of_video:
                release = getattr(answerer, "release_video", None)
                if callable(release):
                    release(item.video)
                bar.update(1)
                bar.set_postfix(questions=n + 1, errors=n_err, refresh=False)
    finally:
        bar.close()
        log.close()
    return ShardSummary(len(items), len(items) - len(todo), len(todo), n_err)
