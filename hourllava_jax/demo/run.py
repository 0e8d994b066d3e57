"""The demo end to end (``launch/demo.py``): data -> tokenizer -> features -> train + evaluate
MemAug and the control -> report. Every stage is resumable where it is expensive to redo
(datasets, tokenizer, features are reused when present in the work directory).

Work directory::

    data/{train,held_out}/   mp4 videos + needle.jsonl        tokenizer/   small BPE
    features/                feature store (both splits)      memaug/, control/: metrics.jsonl,
    tensorboard/, checkpoint/ (orbax)                         results.json, results.txt,
    predictions.jsonl, needle_heatmaps.png
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from hourllava_jax.config import load_model_config
from hourllava_jax.demo import data, dataset, evaluate, report
from hourllava_jax.demo.config import DemoConfig
from hourllava_jax.demo.train import Trainer, build_model, fit, forward_logits

VARIANTS = {"memaug": True, "control": False}  # name -> use_memaug
STAGES = ("datasets", "tokenizer", "features", "train memaug", "eval memaug", "train control", "eval control", "report")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def run_demo(cfg: DemoConfig, workdir: str | Path) -> dict[str, Any]:
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    model_cfg = load_model_config("tiny", cfg.model_overrides)
    timings: dict[str, float] = {}
    bar = tqdm(total=len(STAGES), desc="demo", unit="stage", position=0, dynamic_ncols=True)

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        bar.update(1)
        bar.set_postfix_str(f"{name} {timings[name]:.0f}s, load {_load()}")

    # ------------------------------------------------------------------ datasets (real mp4)
    t0 = time.perf_counter()
    bar.set_description("demo: writing mp4 datasets")
    train_recs = data.make_split(workdir / "data/train", cfg.train, size=cfg.video_size)
    held_recs = data.make_split(workdir / "data/held_out", cfg.held_out, size=cfg.video_size)
    stage("datasets", t0)

    # ------------------------------------------------------------------ tokenizer
    t0 = time.perf_counter()
    tok = data.make_tokenizer(train_recs, workdir / "tokenizer", cfg.vocab_size)
    stage("tokenizer", t0)

    # ------------------------------------------------------------------ features (frozen tower)
    t0 = time.perf_counter()
    bar.set_description("demo: extracting features")
    encoder = data.FrameEncoder(build_model(model_cfg, cfg.seed).vision_tower, model_cfg.memory.pool_size)
    with tqdm(total=len(train_recs) + len(held_recs), desc="features", unit="video", leave=False, position=1) as fbar:
        store = data.extract_features(train_recs, workdir / "data/train", workdir / "features", encoder,
                                      model_cfg.vision.image_size, on_video=fbar.update)
        store = data.extract_features(held_recs, workdir / "data/held_out", workdir / "features", encoder,
                                      model_cfg.vision.image_size, on_video=fbar.update)
    train_items = dataset.load_items(train_recs, store)
    norm = dataset.FeatureNorm.fit(train_items)  # training statistics only, applied to both splits
    train_items = [norm(it) for it in train_items]
    held_items = [norm(it) for it in dataset.load_items(held_recs, store)]
    report.write_json({"mean": norm.mean.tolist(), "std": norm.std.tolist()}, workdir / "feature_norm.json")
    ckw = dataset.collate_kwargs(train_items + held_items, tok, model_cfg, cfg.answer_format, cfg.text_multiple)
    stage("features", t0)

    # ------------------------------------------------------------------ train + evaluate both variants
    results: dict[str, list[evaluate.Prediction]] = {}
    train_info: dict[str, Any] = {}
    for name, use_memaug in VARIANTS.items():
        t0 = time.perf_counter()
        bar.set_description(f"demo: training {name}")
        vcfg = dataclasses.replace(model_cfg, use_memaug=use_memaug)
        shutil.rmtree(workdir / name, ignore_errors=True)  # training starts fresh: no stale metrics
        trainer = Trainer(build_model(vcfg, cfg.seed), cfg.recipe)
        batches = dataset.training_batches(train_items, tok, vcfg, cfg.answer_format, cfg.recipe.batch_size, ckw, cfg.seed)
        info = fit(trainer, batches, workdir / name, log_every=max(1, cfg.recipe.steps // 50))
        info["checkpoint"] = str(trainer.save(workdir / name / "checkpoint"))
        info["load_average"] = _load()
        train_info[name] = info
        stage(f"train {name}", t0)

        t0 = time.perf_counter()
        bar.set_description(f"demo: evaluating {name}")
        with tqdm(total=len(held_items), desc=f"eval {name}", unit="video", leave=False, position=1) as ebar:
            results[name] = evaluate.evaluate(held_items, forward_logits(trainer.model()), tok, vcfg, cfg.answer_format,
                                              ckw, batch_size=cfg.eval_batch_size, on_batch=ebar.update)
        _log_eval(workdir / name, results[name], cfg.recipe.steps)
        stage(f"eval {name}", t0)
        del trainer

    # ------------------------------------------------------------------ report
    t0 = time.perf_counter()
    bound = dataset.control_bound(held_items, model_cfg)
    summ = report.summary(results, bound, {
        "answer_format": cfg.answer_format, "seed": cfg.seed, "train_videos": len(train_items),
        "held_out_videos": len(held_items), "train": train_info, "recipe": dataclasses.asdict(cfg.recipe),
        "config": {"train": dataclasses.asdict(cfg.train), "held_out": dataclasses.asdict(cfg.held_out),
                   "model_overrides": list(cfg.model_overrides)},
        "jax_backend": jax.default_backend(), "cpu_count": os.cpu_count(),
    })
    text = report.table(summ, list(VARIANTS))
    png = report.write_heatmaps(results, workdir / "needle_heatmaps.png", bound_of="control")
    with open(workdir / "predictions.jsonl", "w") as f:
        for name, preds in results.items():
            for p in preds:
                f.write(json.dumps({"variant": name, **p.to_json()}) + "\n")
    stage("report", t0)
    summ["timings_s"] = timings
    summ["load_average_end"] = _load()
    report.write_json(summ, workdir / "results.json")
    (workdir / "results.txt").write_text(text + "\n")
    bar.close()
    tqdm.write("\nHeld-out needle accuracy (%), " f"{len(held_items)} videos never seen in training:\n{text}")
    tqdm.write(f"\nheatmaps: {png}\nresults: {workdir / 'results.json'}\ntimings (s): {timings}")
    return summ


def _log_eval(vdir: Path, preds: list[evaluate.Prediction], step: int) -> None:
    """Held-out accuracy into the variant's TensorBoard and metrics.jsonl (at the last step)."""
    from tensorboardX import SummaryWriter

    acc = evaluate.accuracy(preds)
    with SummaryWriter(str(vdir / "tensorboard")) as w:
        w.add_scalar("eval/accuracy", acc, step)
    with open(vdir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": step, "eval/accuracy": acc}) + "\n")
