"""Ask Hour-LLaVA a question about a video file: decode, encode, prompt, generate (design §1–4).

    qa = VideoQA.from_pretrained("ckpt/", cache_dir="~/.cache/hourllava")
    ans = qa.answer("talk.mp4", "What is on the whiteboard?", max_new_tokens=64, stream=print_piece)

Steps of :meth:`VideoQA.answer`:

1. ``encode``: PyAV decoding at 1 FPS (design §3.2, ``data/video.py``) straight to the tower's size,
   then the shared :class:`~hourllava_jax.data.encoder.FrameEncoder` (SigLIP normalisation,
   vision tower + bilinear pooling, jitted on fixed-size chunks of frames: one compile for any
   video length). Cached per (video content, vision tower,
   sampling settings) by :class:`~hourllava_jax.infer.memory_cache.MemoryCache`.
2. Prompt: time instruction + ChatML + the assistant header (design §4). Inference passes no
   labels, so the whole prompt is the MemAug query (design §2.4; training drops the labelled
   ``\\n``/ChatML tokens, the release does not at inference and neither do we).
3. Layout: :func:`~hourllava_jax.memory.layout.video_layout` with ``uniform`` spatial and
   temporal forgetting by default (deterministic; the release draws random spatial subsets,
   unseeded), or ``random`` spatial forgetting with an explicit ``forgetting_seed``.
4. ``collate`` (lengths rounded up to buckets) -> jitted ``HourLlava.llm_inputs`` -> jitted
   generation with the KV cache from ``inputs_embeds`` (``infer/generate.py``); greedy by
   default, seeded temperature/top-p sampling otherwise.

Shapes are bucketed (text to ``text_bucket``, frames to ``unit_bucket``, memory/decayed tokens
to multiples of 128/64) so further questions about a video reuse every compiled program.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from hourllava_jax.data import errors
from hourllava_jax.data.chat import add_time_instruction, generation_prompt
from hourllava_jax.data.encoder import FrameEncoder
from hourllava_jax.data.frames import DEFAULT_MIN_FRAMES
from hourllava_jax.data.errors import DataError
from hourllava_jax.data.records import Turn
from hourllava_jax.data.tokenizer import chat_token_ids
from hourllava_jax.infer import generate as gen
from hourllava_jax.infer.memory_cache import EncodedVideo, MemoryCache, Source, vision_fingerprint
from hourllava_jax.data.collate import Sample, collate
from hourllava_jax.memory.layout import video_layout

Forgetting = Literal["uniform", "random"]
StreamCallback = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Answer:
    """text: the decoded answer (end token and special tokens dropped); token_ids: int32[N]
    generated ids before the end token; finished: an end token was emitted (else the
    ``max_new_tokens`` limit hit); frame_indices int64[T] / timestamps float64[T] (seconds):
    the frames the model saw; duration: seconds; source: where the features came from
    (``computed`` / ``memory`` / ``disk``); seconds: wall time per stage."""

    text: str
    token_ids: np.ndarray
    finished: bool
    frame_indices: np.ndarray
    timestamps: np.ndarray
    duration: float
    source: Source = "computed"
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)


class StreamDecoder:
    """Incremental detokenisation: ``push(token)`` returns the new text (possibly ""), holding
    back an incomplete UTF-8 character; the pieces concatenate to ``decode(all tokens)``."""

    def __init__(self, tokenizer):
        self.tok = tokenizer
        self.ids: list[int] = []
        self.emitted = ""

    def text(self) -> str:
        return self.tok.decode(self.ids, skip_special_tokens=True)

    def push(self, token: int) -> str:
        self.ids.append(int(token))
        text = self.text()
        if text.endswith("\ufffd") or not text.startswith(self.emitted):
            return ""  # a multi-byte character is incomplete (byte-level BPE): wait for more
        piece, self.emitted = text[len(self.emitted):], text
        return piece

    def flush(self) -> str:
        text = self.text()
        if not text.startswith(self.emitted):  # cannot happen for byte-level BPE; be explicit
            raise RuntimeError(f"streamed text {self.emitted!r} is not a prefix of the answer {text!r}")
        piece, self.emitted = text[len(self.emitted):], text
        return piece


# ----------------------------------------------------------------------------------------------
# Jitted pieces (graphdef static, parameters as arguments: one compile per shape bucket)
# ----------------------------------------------------------------------------------------------


@functools.partial(jax.jit, static_argnames=("graphdef",))
def _llm_inputs(graphdef, state, batch):
    """The padded batch -> (embeds float[B, Lo, H], valid bool[B, Lo])."""
    x = nnx.merge(graphdef, state).llm_inputs(batch)
    return x.embeds, x.valid


class VideoQA:
    """Question answering about video files with one Hour-LLaVA model.

    Args:
      model: a :class:`~hourllava_jax.model.hour_llava.HourLlava`; config: its config.
      tokenizer: a HF tokenizer with the ChatML tokens (``data/tokenizer.py``).
      cache: a :class:`MemoryCache` (default: in memory, 4 videos); ``cache=False`` disables it.
      fps / min_frames / max_frames: frame sampling (design §3.2: 1 FPS, at least 128, no cap).
      frame_chunk: frames per vision-tower call (fixed: one compile for every video length).
      text_bucket / unit_bucket: padding multiples of the prompt and of the frame count.
      forgetting: ``uniform`` (deterministic) or ``random`` spatial forgetting with
        ``forgetting_seed`` (design §2).
      decode_timeout_s: wall-clock budget for decoding one video.

    The parameters are snapshotted at construction (``nnx.split``) and the vision fingerprint is
    computed once: build a new ``VideoQA`` after changing the model's weights.
    """

    def __init__(self, model, config, tokenizer, *, cache: MemoryCache | bool | None = None, fps: float = 1.0,
                 min_frames: int = DEFAULT_MIN_FRAMES, max_frames: int | None = None, frame_chunk: int = 16,
                 text_bucket: int = 64, unit_bucket: int = 16, forgetting: Forgetting = "uniform", forgetting_seed: int = 0,
                 decode_timeout_s: float | None = 600.0):  # fmt: skip
        if forgetting not in ("uniform", "random"):
            raise ValueError(f"forgetting must be 'uniform' or 'random', got {forgetting!r}")
        if frame_chunk < 1:
            raise ValueError(f"frame_chunk must be >= 1, got {frame_chunk}")
        self.model, self.config, self.tokenizer = model, config, tokenizer
        # Not ``cache or None``: an empty MemoryCache has len() 0 and is falsy.
        self.cache = MemoryCache() if cache is None or cache is True else (None if cache is False else cache)
        self.fps, self.min_frames, self.max_frames = fps, min_frames, max_frames
        self.frame_chunk, self.text_bucket, self.unit_bucket = frame_chunk, text_bucket, unit_bucket
        self.forgetting, self.forgetting_seed = forgetting, forgetting_seed
        self.decode_timeout_s = decode_timeout_s
        ids = chat_token_ids(tokenizer)
        llm = config.llm
        self.pad_id = llm.pad_token_id if llm.pad_token_id is not None else ids.pad
        # The checkpoint's end ids plus <|im_end|>: a ChatML turn ends there whatever config.json says.
        self.eos_ids = tuple(dict.fromkeys((*llm.eos_ids, ids.im_end)))
        # Temporal forgetting stays the release's uniform rule unless random mode is asked for
        # and the config says random too (keyframe/question need data the layout does not see).
        random_time = forgetting == "random" and config.memory.temporal_mode == "random"
        self.memory_config = dataclasses.replace(config.memory, spatial_mode=forgetting,
                                                 temporal_mode="random" if random_time else "uniform")
        self._graphdef, self._state = nnx.split(model)
        # The model's own tower and pool size: the features HourLlava.encode_frames computes.
        self.encoder = FrameEncoder(model.vision_tower, pool_size=config.memory.pool_size, chunk=frame_chunk)
        self._fingerprint: str | None = None

    @classmethod
    def from_pretrained(cls, checkpoint_dir: str | Path, tokenizer_dir: str | Path | None = None, *, dtype: Any = jnp.float32,
                        cache_dir: str | Path | None = None, max_in_memory: int = 4, full_hash: bool = False, **kwargs) -> VideoQA:
        """Loads an Hour-LLaVA HF directory (``convert.load_pretrained``) and its tokenizer
        (``tokenizer_dir``, default: the checkpoint directory). ``cache_dir``: on-disk feature
        cache (default: memory only). Other keyword arguments go to :class:`VideoQA`."""
        from hourllava_jax.config import HourLlavaConfig
        from hourllava_jax.convert import load_pretrained
        from hourllava_jax.data.tokenizer import load_tokenizer

        config, model = load_pretrained(checkpoint_dir, dtype)
        if not isinstance(config, HourLlavaConfig):
            raise ValueError(f"{checkpoint_dir}: not an Hour-LLaVA checkpoint (loaded a {type(config).__name__})")
        tokenizer = load_tokenizer(tokenizer_dir or checkpoint_dir)
        cache = MemoryCache(cache_dir, max_in_memory=max_in_memory, full_hash=full_hash)
        return cls(model, config, tokenizer, cache=cache, **kwargs)

    # -- video -> features ------------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        """The vision tower's cache fingerprint (computed once: it hashes the parameters)."""
        if self._fingerprint is None:
            self._fingerprint = vision_fingerprint(self.model)
        return self._fingerprint

    def sampling_settings(self) -> dict[str, Any]:
        return {"fps": self.fps, "min_frames": self.min_frames, "max_frames": self.max_frames,
                "size": self.config.vision.image_size}

    def encode_frames(self, frames: np.ndarray) -> np.ndarray:
        """uint8[T, S, S, 3] RGB at the tower's size -> float32[T, p², C] pooled features
        (``HourLlava.encode_frames`` through the shared :class:`FrameEncoder`)."""
        return self.encoder(frames)

    def _compute(self, video: str | Path) -> EncodedVideo:
        from hourllava_jax.data.video import decode_video

        dec = decode_video(video, fps=self.fps, min_frames=self.min_frames, max_frames=self.max_frames,
                           size=self.config.vision.image_size, timeout_s=self.decode_timeout_s)
        return EncodedVideo(self.encode_frames(dec.frames), dec.indices.astype(np.int64), dec.timestamps.astype(np.float64),
                            float(dec.duration), str(video))

    def encode(self, video: str | Path) -> tuple[EncodedVideo, Source]:
        """The video's features (cached when a cache is set). Bad files raise DataError naming them."""
        if self.cache is None:
            return self._compute(video), "computed"
        return self.cache.get_or_compute(video, self.fingerprint, self.sampling_settings(), lambda: self._compute(video))

    def release_video(self, video: str | Path) -> None:
        """Forgets the in-memory features of ``video`` (the disk cache keeps them)."""
        if self.cache is not None:
            self.cache.release(video)

    # -- prompt and model inputs ------------------------------------------------------------

    def prompt_ids(self, question: str, enc: EncodedVideo) -> np.ndarray:
        """int32[L]: time instruction + ChatML + assistant header (design §4.4), one ``<image>``."""
        turns = add_time_instruction([Turn("human", question)], enc.duration, enc.num_frames)
        return generation_prompt(turns, self.tokenizer, self.config.image_token_id)

    def layout(self, num_frames: int):
        key = jax.random.key(self.forgetting_seed) if self.forgetting == "random" else None
        return video_layout(num_frames, self.memory_config, key=key)

    def llm_inputs(self, prompts: Sequence[np.ndarray], enc: EncodedVideo) -> tuple[jax.Array, jax.Array]:
        """Prompts (each int32[L_i] with one placeholder) about one video -> the LLM's input
        (embeds float[B, Lo, H], valid bool[B, Lo]), valid tokens first in each row."""
        lay = self.layout(enc.num_frames)
        longest = max(len(p) for p in prompts) - 1 + len(lay.decayed[0])  # placeholder -> decayed tokens
        if longest > self.config.max_length:  # the splice would silently cut the question off
            raise DataError(enc.path, errors.TOO_LONG,
                            f"{longest} LLM input tokens exceed max_length {self.config.max_length} (long subtitles?)")
        samples = [Sample(np.asarray(p, np.int32), None, enc.features, lay) for p in prompts]
        batch = collate(samples, pad_id=self.pad_id, text_multiple=self.text_bucket, unit_multiple=self.unit_bucket,
                        image_token_id=self.config.image_token_id)
        return _llm_inputs(self._graphdef, self._state, {k: jnp.asarray(v) for k, v in batch.items()})

    # -- answering --------------------------------------------------------------------------

    def answer(self, video: str | Path, question: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
               top_p: float = 1.0, seed: int = 0, stream: StreamCallback | None = None) -> Answer:
        """Answers ``question`` about ``video``. Greedy unless ``temperature > 0`` (then sampled
        with ``seed``, reproducibly). ``stream(piece)`` receives the answer text as it is
        generated; the pieces concatenate to ``Answer.text``."""
        t0 = time.perf_counter()
        enc, source = self.encode(video)
        t1 = time.perf_counter()
        out = self.answer_encoded(enc, question, max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                  seed=seed, stream=stream)
        secs = {"encode": t1 - t0, **out.seconds}
        return dataclasses.replace(out, source=source, seconds=secs)

    def answer_encoded(self, enc: EncodedVideo, question: str, *, max_new_tokens: int = 128, temperature: float = 0.0,
                       top_p: float = 1.0, seed: int = 0, stream: StreamCallback | None = None) -> Answer:
        """:meth:`answer` for an already encoded video."""
        t0 = time.perf_counter()
        embeds, valid = jax.block_until_ready(self.llm_inputs([self.prompt_ids(question, enc)], enc))  # honest timings
        rng = jax.random.key(seed) if temperature > 0 else None
        kw = dict(inputs_embeds=embeds, attention_mask=valid, max_new_tokens=max_new_tokens, eos_ids=self.eos_ids,
                  temperature=temperature, top_p=top_p, rng=rng, pad_id=self.pad_id, bucket=self.text_bucket)
        t1 = time.perf_counter()
        ids: list[int] = []
        finished = False
        if stream is None:
            g = gen.generate(self.model.llm, **kw)
            toks = np.asarray(g.tokens[0, : int(g.lengths[0])])
            finished = bool(len(toks)) and int(toks[-1]) in self.eos_ids
            ids = [int(t) for t in (toks[:-1] if finished else toks)]
        else:
            dec = StreamDecoder(self.tokenizer)
            for step in gen.stream(self.model.llm, **kw):
                tok = int(step[0])
                if tok in self.eos_ids:
                    finished = True
                    break
                ids.append(tok)
                if piece := dec.push(tok):
                    stream(piece)
            if piece := dec.flush():
                stream(piece)
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        t2 = time.perf_counter()
        return Answer(text, np.asarray(ids, np.int32), finished, enc.frame_indices, enc.timestamps, enc.duration,
                      seconds={"inputs": t1 - t0, "generate": t2 - t1})


__all__ = ["Answer", "StreamDecoder", "VideoQA"]
