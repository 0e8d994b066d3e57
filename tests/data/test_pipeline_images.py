"""Image and multi-image records through the grain pipeline (design §1.4), and the model reading them."""

from __future__ import annotations

import dataclasses
import json
from collections import Counter

import grain
import numpy as np
import pytest
from PIL import Image

from hourllava_jax.config import load_model_config
from hourllava_jax.data import errors
from hourllava_jax.data.chat import tokenize_record
from hourllava_jax.data.images import ImageSpec, load_image, multi_image_units, single_image_units
from hourllava_jax.data.pipeline import PipelineConfig, RecordSource, make_feature_pipeline
from hourllava_jax.data.preprocess import normalize
from hourllava_jax.data.records import parse_record
from hourllava_jax.data.samples import IMAGE, IMAGES, TEXT, SampleBuilder, load_light_tokenizer
from hourllava_jax.data.tokenizer import build_tokenizer
from hourllava_jax.memory.layout import PAD, TAPS, image_layout, image_layout_size
from hourllava_jax.data.anyres import anyres_grid_shape

TINY = load_model_config("tiny")
S = TINY.vision.image_size  # 112
G = S // TINY.vision.patch_size  # 8 tokens per side
MEMORY = dataclasses.replace(TINY.memory, spatial_mode="random")
SIZES = [(150, 100), (100, 150), (112, 112), (300, 90), (60, 240), (400, 400), (90, 90), (500, 200)]


def _image_record(i: int, images: list[str]) -> dict:
    q = "<image>\n" * len(images) + f"What is in picture {i}?"
    return {"id": f"i{i}", "image": images[0] if len(images) == 1 else images,
            "conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": f"Shapes number {i}."}]}


def _text_record(i: int) -> dict:
    return {"id": f"t{i}", "conversations": [{"from": "human", "value": f"Say {i}."}, {"from": "gpt", "value": f"{i}"}]}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """8 single-image and 4 two-image records over random RGB files, 2 text records, plus bad ones:
    a missing image, a non-image file, and a truncated PNG (its header reads, its pixels do not)."""
    root = tmp_path_factory.mktemp("img")
    (root / "images").mkdir()
    rng = np.random.default_rng(0)
    for k, (w, h) in enumerate(SIZES):
        Image.fromarray(rng.integers(0, 256, (h, w, 3), np.uint8)).save(root / "images" / f"im{k}.png")
    (root / "images" / "junk.jpg").write_bytes(b"this is not an image at all")
    full = (root / "images" / "im5.png").read_bytes()
    (root / "images" / "cut.png").write_bytes(full[: len(full) // 3])
    recs = [_image_record(k, [f"im{k}.png"]) for k in range(len(SIZES))]
    recs += [_image_record(10 + k, [f"im{k}.png", f"im{k + 4}.png"]) for k in range(4)]
    recs += [_text_record(0), _text_record(1)]
    (root / "records.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    bad = recs + [_image_record(90, ["nope.png"]), _image_record(91, ["junk.jpg"]), _image_record(92, ["cut.png"]),
                  _image_record(93, ["im0.png", "nope.png"])]
    (root / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in bad) + "\n")
    corpus = [t["value"] for r in recs for t in r["conversations"]]
    build_tokenizer(corpus, 300, root / "tok")
    return root


def _pipe(root, records="records.jsonl", **kw):
    cfg = PipelineConfig(**{"batch_size": 2, "seed": 1, "text_multiple": 32, "image_memory_multiple": 64,
                            "image_unit_buckets": (2, 5, 10, 17, 37), **kw})
    return make_feature_pipeline(RecordSource(root / records), tokenizer_dir=root / "tok", memory=MEMORY, cfg=cfg,
                                 image_root=root, image_size=S, image_tokens_per_side=G,
                                 shard_options=grain.sharding.NoSharding())


def test_layout_size_predicts_the_layout():
    """Planning sizes from the image size alone: M exact, the decayed block within its bound."""
    import jax

    for size in SIZES + [(1000, 300), (2000, 1990), (37, 500)]:
        patches = anyres_grid_shape(size, MEMORY.image_grid_pinpoints_max, S)
        m, n = image_layout_size(size, patches, G, MEMORY)
        for seed in range(3):
            lay = image_layout(size, patches, G, MEMORY, key=jax.random.key(seed))
            assert lay.num_memory == m and len(lay.decayed[0]) <= n


def test_image_batches_match_the_reference_preprocessing_and_layouts(data):
    pipe = _pipe(data)
    batches = list(pipe)
    assert pipe.skipped == {}
    tok = load_light_tokenizer(data / "tok")
    source = RecordSource(data / "records.jsonl")
    builder = SampleBuilder(tokenizer_dir=data / "tok", memory=MEMORY, cfg=pipe.cfg, image_root=data,
                            image_size=S, image_tokens_per_side=G)
    spec = ImageSpec(S, G)
    kinds = Counter()
    for b, batch in enumerate(batches):
        pb = pipe.plan.planned(b)
        kinds[pb.kind] += 1
        metas = [pipe.plan.metas[i] for i in pb.rows]
        assert {m.kind for m in metas} == {pb.kind}  # one kind per batch
        assert batch["input_ids"].shape == (2, pb.text_len)
        if pb.kind == TEXT:
            assert set(batch) == {"input_ids", "attention_mask", "labels"}
            continue
        assert "features" not in batch and "pixels" not in batch
        assert batch["image_pixels"].shape == (2, pb.units, S, S, 3) and pb.units in (2, 5, 10, 17, 37)
        assert batch["decayed"].shape == (2, pb.placeholders, pb.decayed) and pb.memory % 64 == 0
        if pb.kind == IMAGE:
            assert pb.placeholders == 1 and batch["memory_src"].shape == (2, pb.memory, TAPS)
            assert batch["memory_w"].shape == (2, pb.memory, TAPS)
        else:
            assert pb.placeholders == pb.units and "memory_w" not in batch
            assert batch["memory_src"].shape == (2, pb.memory)
        for row, i in enumerate(pb.rows):
            rec = parse_record(json.loads(source[i]["record"]), "x")
            images = [load_image(data / "images" / p) for p in rec.images]
            key = builder._key(pb.epoch, i)
            if pb.kind == IMAGE:
                units, lay = single_image_units(images[0], spec, MEMORY, key=key)
            else:
                units, lay = multi_image_units(images, spec, MEMORY, key=key)
            u, m = len(units), lay.num_memory
            np.testing.assert_array_equal(batch["image_pixels"][row, :u], normalize(units))
            assert not batch["image_pixels"][row, u:].any()
            np.testing.assert_array_equal(batch["memory_src"][row, :m], lay.memory_src)
            assert (batch["memory_src"][row, m:] == PAD).all()
            np.testing.assert_array_equal(batch["memory_pos"][row, :m], lay.memory_pos)
            for j, d in enumerate(lay.decayed):
                np.testing.assert_array_equal(batch["decayed"][row, j, : len(d)], d)
                assert (batch["decayed"][row, j, len(d):] == -1).all()
            assert (batch["decayed"][row, len(lay.decayed):] == -1).all()
            if pb.kind == IMAGE:
                np.testing.assert_array_equal(batch["memory_w"][row, :m], lay.memory_w)
            ref = tokenize_record(rec, tok)  # images: no time instruction
            n = len(ref.input_ids)
            np.testing.assert_array_equal(batch["input_ids"][row, :n], ref.input_ids)
            np.testing.assert_array_equal(batch["labels"][row, :n], ref.labels)
    assert kinds[IMAGE] >= 3 and kinds[IMAGES] >= 1 and kinds[TEXT] == 1


def test_bad_images_are_skipped_and_counted(data):
    """Missing and non-image files are dropped when planning; a truncated file (header fine)
    becomes a filler row when its batch loads; nothing raises."""
    pipe = _pipe(data, records="bad.jsonl", batch_size=1, shuffle=False)
    assert pipe.plan_skipped == {errors.MISSING_FILE: 2, errors.CORRUPT_IMAGE: 1}
    batches = list(pipe)
    assert pipe.skipped == {errors.MISSING_FILE: 2, errors.CORRUPT_IMAGE: 2}
    (filler,) = [b for b in batches if "image_pixels" in b and not b["image_pixels"].any()]
    assert filler["attention_mask"].sum() == 1 and (filler["labels"] == -100).all()
    assert (filler["memory_src"] == PAD).all() and (filler["decayed"] == -1).all() and not filler["memory_w"].any()


def test_image_records_without_an_image_root_are_counted_as_unsupported(data):
    cfg = PipelineConfig(batch_size=1, text_multiple=32)
    pipe = make_feature_pipeline(RecordSource(data / "records.jsonl"), tokenizer_dir=data / "tok", memory=MEMORY,
                                 cfg=cfg, shard_options=grain.sharding.NoSharding())
    assert pipe.plan_skipped == {errors.UNSUPPORTED_RECORD_KIND: 12}


def test_the_model_reads_image_batches_unpooled(data):
    """``image_pixels`` run through SigLIP without the video pooling: the forward equals feeding
    the tower's unpooled output as ``features``, and the loss is finite."""
    import jax
    from flax import nnx

    from hourllava_jax.model.hour_llava import HourLlava, loss_fn

    model = HourLlava(TINY, rngs=nnx.Rngs(0))
    pipe = _pipe(data, shuffle=False)
    for batch in pipe:
        if "memory_w" in batch:
            break
    logits, labels = model(batch)
    px = batch.pop("image_pixels")
    b, u = px.shape[:2]
    feats = model.encode_images(px.reshape((b * u,) + px.shape[2:]))
    assert feats.shape == (b * u, G * G, TINY.vision.hidden_size)
    ref, ref_labels = model({**batch, "features": feats.reshape(b, u, G * G, -1)})
    np.testing.assert_allclose(np.asarray(logits), np.asarray(ref), atol=1e-5, rtol=1e-5)
    np.testing.assert_array_equal(labels, ref_labels)
    loss, aux = loss_fn(model, {**batch, "image_pixels": px})
    assert np.isfinite(float(loss)) and int(aux["tokens"]) > 0
    jax.clear_caches()


def test_image_batches_resume_exactly(data):
    pipe = _pipe(data, num_epochs=None)
    [next(pipe) for _ in range(3)]
    state = json.loads(json.dumps(pipe.get_state()))
    want = [next(pipe) for _ in range(3)]
    fresh = _pipe(data, num_epochs=None)
    fresh.set_state(state)
    got = [next(fresh) for _ in range(3)]
    for x, y in zip(want, got):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k], err_msg=k)
