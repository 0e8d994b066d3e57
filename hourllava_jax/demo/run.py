"""The demo end to end (``launch/demo.py``), on the product's own path:

    needle mp4s -> tokenizer -> tiny SigLIP + Qwen2 HF dirs -> ``compose`` -> feature extraction
    -> spliced training set -> the trainer (``launch/train.py``'s code, ``init.from`` the composed
    start) for MemAug and the no-MemAug control -> ``export`` -> ``launch/evaluate.py --benchmark
    needle`` (log-likelihood mode) on held-out videos of the training length, 10 minutes and 1 hour
    -> report.

Expensive stages are reused when present in the work directory (datasets, tokenizer, the start
checkpoint, features, the spliced set); training always starts fresh.

Work directory::

    data/train/, data/held_out/        mp4 videos + needle.jsonl (held_out also needle.json)
    tokenizer/  pretrained/{siglip,qwen2,composed,start}/  features/  train_set/
    memaug/, control/                  the trainer's workdirs (checkpoints/, metrics.jsonl,
                                       tensorboard/), hf/ (export), eval/ (runner results)
    results.json, results.txt, predictions.jsonl, needle_heatmaps.png
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import jax
from tqdm import tqdm

from hourllava_jax.config import load_model_config
from hourllava_jax.data.features import FeatureStore
from hourllava_jax.demo import data, dataset, report, start
from hourllava_jax.demo.config import DemoConfig

VARIANTS = {"memaug": True, "control": False}  # name -> use_memaug
STAGES = ("datasets", "tokenizer", "start checkpoint", "features", "train set",
          "train memaug", "export memaug", "eval memaug", "train control", "export control", "eval control", "report")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _flag_list(xs: list[str]) -> str:
    return json.dumps([str(x) for x in xs])  # JSON is YAML: the override parser reads it as a list


class DemoInterrupted(RuntimeError):
    """A variant's training stopped before its last step (the trainer saved and returned on SIGTERM)."""


def check_trained(name: str, preempted: bool, step: int, num_steps: int) -> None:
    """Raises :class:`DemoInterrupted` unless the run reached ``num_steps``: a half-trained model
    must not be exported, scored and reported as the demo's result."""
    if preempted or step < num_steps:
        raise DemoInterrupted(f"training of '{name}' stopped at step {step} of {num_steps}"
                              f"{' (termination signal)' if preempted else ''}; nothing was evaluated. "
                              "Run the demo again: the data, start checkpoint and features are reused.")


def run_demo(cfg: DemoConfig, workdir: str | Path) -> dict[str, Any]:
    from hourllava_jax.cli.evaluate import run as evaluate
    from hourllava_jax.cli.export import export_workdir
    from hourllava_jax.data.extract import build_encoder, extract_features
    from hourllava_jax.cli.train import run_training
    from hourllava_jax.train.config import load_train_config
    from hourllava_jax.eval.report import load_records

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    recipe = load_train_config(cfg.recipe)
    model_cfg = load_model_config(recipe.model, list(recipe.model_overrides))
    timings: dict[str, float] = {}
    bar = tqdm(total=len(STAGES), desc="demo", unit="stage", position=0, dynamic_ncols=True)

    def stage(name: str, t0: float) -> None:
        timings[name] = round(time.perf_counter() - t0, 1)
        bar.update(1)
        bar.set_postfix_str(f"{name} {timings[name]:.0f}s, load {_load()}")

    # ------------------------------------------------------------------ datasets (real mp4)
    t0 = time.perf_counter()
    bar.set_description("demo: writing mp4 datasets")
    train_root, held_root = workdir / "data/train", workdir / "data/held_out"
    train_recs = data.make_split(train_root, cfg.train, size=cfg.video_size)
    held_recs = data.make_split(held_root, cfg.held_out, size=cfg.video_size)
    if cfg.long_held_out is not None:
        held_recs += data.make_split(held_root, cfg.long_held_out, size=cfg.video_size, records_name="needle_long.jsonl")
    data.write_benchmark(held_root, held_recs)
    stage("datasets", t0)

    # ------------------------------------------------------------------ tokenizer
    t0 = time.perf_counter()
    qa = [data.eval_item(r, "") for r in train_recs]
    texts = data.tokenizer_texts(train_recs, [data.question_text(q) for q in qa] + [data.answer_text(q) for q in qa])
    data.make_tokenizer(texts, workdir / "tokenizer", cfg.vocab_size)
    stage("tokenizer", t0)

    # ------------------------------------------------------------------ the public-weights stand-in
    t0 = time.perf_counter()
    bar.set_description("demo: composing the start checkpoint")
    composed = start.composed(workdir / "pretrained", model_cfg, cfg.seed)
    stage("start checkpoint", t0)

    # ------------------------------------------------------------------ features (frozen tower)
    t0 = time.perf_counter()
    bar.set_description("demo: extracting features")
    # The start's own tower, pooled as the trained model pools (compose writes the release's pool 8).
    encoder = build_encoder(composed, pool_size=model_cfg.memory.pool_size)
    with tqdm(total=len(train_recs), desc="features", unit="video", leave=False, position=1) as fbar:
        extract_features(train_root / "videos", workdir / "features", encoder, records=train_recs,
                         min_frames=model_cfg.memory.min_frames, on_video=lambda *_: fbar.update())
    train_items = dataset.load_items(train_recs, FeatureStore(workdir / "features"))
    stage("features", t0)

    # ------------------------------------------------------------------ spliced training set + the start
    t0 = time.perf_counter()
    bar.set_description("demo: writing the training set")
    init = workdir / "pretrained/start"
    if not (init / "config.json").is_file():
        mean, std = start.feature_stats([it.features for it in train_items])  # training statistics only
        start.fold_feature_norm(composed, init, mean, std)
    set_dir = workdir / "train_set"
    records, recipe_file = set_dir / "records.jsonl", set_dir / "set.json"
    drawn = {"n": cfg.spliced_samples, "seed": cfg.seed, "long": [list(x) for x in cfg.long_train]}
    if not records.is_file() or not recipe_file.is_file() or json.loads(recipe_file.read_text()) != drawn:
        shutil.rmtree(set_dir, ignore_errors=True)  # another draw: a stale set must not be reused
        with tqdm(total=cfg.spliced_samples, desc="train set", unit="sample", leave=False, position=1) as sbar:
            dataset.write_training_set(train_items, cfg.spliced_samples, cfg.seed, set_dir / "features", records,
                                       long=cfg.long_train, on_sample=sbar.update)
        recipe_file.write_text(json.dumps(drawn))
    stage("train set", t0)

    # ------------------------------------------------------------------ train, export, evaluate both variants
    results: dict[str, list[dict[str, Any]]] = {}
    train_info: dict[str, Any] = {}
    by_id = {r.id: r for r in held_recs}
    for name, use_memaug in VARIANTS.items():
        vdir = workdir / name
        t0 = time.perf_counter()
        bar.set_description(f"demo: training {name}")
        shutil.rmtree(vdir, ignore_errors=True)  # training starts fresh: no stale checkpoints or metrics
        overrides = [
            f"init.from={init}", f"data.records={_flag_list([records])}", f"data.feature_store={set_dir / 'features'}",
            f"data.tokenizer={workdir / 'tokenizer'}", f"num_steps={cfg.steps}", f"global_batch_size={cfg.batch_size}",
            f"seed={cfg.seed}", f"data.seed={cfg.seed}", "export_hf=false",
            f"model_overrides={_flag_list([*recipe.model_overrides, f'use_memaug={str(use_memaug).lower()}'])}",
        ]
        out = run_training(cfg.recipe, vdir, overrides)
        step = int(jax.device_get(out.state.step))
        check_trained(name, out.preempted, step, cfg.steps)
        train_info[name] = {**out.last_metrics, "steps": step, "load_average": _load()}
        stage(f"train {name}", t0)

        t0 = time.perf_counter()
        hf = export_workdir(vdir, vdir / "hf", overwrite=True)
        stage(f"export {name}", t0)

        t0 = time.perf_counter()
        bar.set_description(f"demo: evaluating {name}")
        # One feature cache for both variants: they share the start's frozen tower, so the control
        # reuses the MemAug run's encoded videos (the cache is keyed by the tower's parameters).
        evaluate(["--benchmark", "needle", "--root", str(held_root), "--checkpoint", str(hf), "--out", str(vdir / "eval"),
                  "--mode", "loglikelihood", "--cache-dir", str(workdir / "eval_cache"), "--no-progress"])
        recs, _ = load_records(vdir / "eval", "needle")
        mem = model_cfg.memory
        for r in recs:
            n = data.needle(by_id[r["id"]])
            r["kept"] = dataset.needle_kept(int(n["n_frames"]), int(n["frame"]), mem)
        results[name] = recs
        stage(f"eval {name}", t0)

    # ------------------------------------------------------------------ report
    t0 = time.perf_counter()
    summ = report.summary(results, "control", {
        "seed": cfg.seed, "train_videos": len(train_recs), "spliced_samples": cfg.spliced_samples,
        "held_out_videos": len(held_recs), "train": train_info, "steps": cfg.steps, "batch_size": cfg.batch_size,
        "recipe": cfg.recipe, "jax_backend": jax.default_backend(), "cpu_count": os.cpu_count(),
    })
    text = report.table(summ, list(VARIANTS))
    png = report.write_heatmaps(results, workdir / "needle_heatmaps.png", bound_of="control")
    with open(workdir / "predictions.jsonl", "w") as f:
        for name, recs in results.items():
            for r in recs:
                f.write(json.dumps({"variant": name, **r}) + "\n")
    stage("report", t0)
    summ["timings_s"] = timings
    summ["load_average_end"] = _load()
    report.write_json(summ, workdir / "results.json")
    (workdir / "results.txt").write_text(text + "\n")
    bar.close()
    tqdm.write(f"\nHeld-out needle accuracy (%), {len(held_recs)} videos never seen in training:\n{text}")
    tqdm.write(f"\nheatmaps: {png}\nresults: {workdir / 'results.json'}\ntimings (s): {timings}")
    return summ
