"""Export a training run as a Hugging Face Hour-LLaVA directory (``hourllava-convert export``).

    hourllava-convert export --workdir runs/stage3 [--step N] --out ckpt/my-hourllava [--dtype bfloat16]

Reads the run's ``train_config.yaml`` (written by the trainer) for the model config and the
tokenizer, and one checkpoint's parameters (newest complete one, or ``--step``) one tensor at a
time; writes ``config.json`` in the published keys (``hour_llava_to_hf_config``), sharded
safetensors (``save_pretrained``) and the tokenizer files of ``data.tokenizer``, so
``load_pretrained``, ``launch/answer.py`` and ``launch/evaluate.py`` read it with no other flag.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import jax

from hourllava_jax.config.base import ConfigError
from hourllava_jax.convert.safetensors_io import DEFAULT_MAX_SHARD_BYTES

# What a Hugging Face tokenizer directory may hold (transformers' save_pretrained names).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
                   "vocab.json", "merges.txt", "chat_template.jinja", "chat_template.json", "generation_config.json")


def copy_tokenizer(src: str | Path, out: str | Path) -> list[str]:
    """Copies the tokenizer files of directory ``src`` into ``out``; returns their names."""
    src = Path(src)
    names = [n for n in TOKENIZER_FILES if (src / n).is_file()] + sorted(p.name for p in src.glob("*.tiktoken"))
    if "tokenizer.json" not in names and "vocab.json" not in names and not any(n.endswith(".tiktoken") for n in names):
        raise ConfigError(f"{src}: no tokenizer files (tokenizer.json, vocab.json + merges.txt or *.tiktoken)")
    for n in names:
        shutil.copyfile(src / n, Path(out) / n)
    return names


def export_workdir(
    workdir: str | Path,
    out: str | Path,
    step: int | None = None,
    *,
    tokenizer: str | Path | None = None,
    dtype: Any = None,
    max_shard_bytes: int = DEFAULT_MAX_SHARD_BYTES,
    overwrite: bool = False,
) -> Path:
    """Writes checkpoint ``step`` (default: the newest complete one) of training run ``workdir`` to
    ``out`` as an Hour-LLaVA HF directory; returns ``out``.

    ``tokenizer``: the directory to copy tokenizer files from (default: the run's
    ``data.tokenizer``, relative to the working directory as at training time). ``dtype``:
    stored dtype (default: the parameters' own, fp32 masters, so a reload is bitwise).
    """
    from hourllava_jax.train.config import model_config
    from hourllava_jax.convert.api import save_pretrained
    from hourllava_jax.convert.hour_llava_keys import build_hour_llava, hour_llava_hf_rules
    from hourllava_jax.convert.mapping import iter_hf_tensors
    from hourllava_jax.train.checkpoint import CheckpointParams
    from hourllava_jax.train.config import load_train_config

    workdir, out = Path(workdir), Path(out)
    saved = workdir / "train_config.yaml"
    if not saved.is_file():
        raise ConfigError(f"{workdir}: not a training workdir (no train_config.yaml)")
    cfg = load_train_config(saved)
    if cfg.model == "standin":
        raise ConfigError(f"{saved}: model 'standin' (the trainer tests' toy) has no Hugging Face layout")
    tok = Path(tokenizer) if tokenizer else Path(cfg.data.tokenizer) if cfg.data.tokenizer else None
    if tok is None or not tok.is_dir():
        raise ConfigError(f"{saved}: data.tokenizer {str(tok or '')!r} is not a directory: pass the tokenizer to copy "
                          "(--tokenizer DIR) so the export answers without one")
    mcfg = model_config(cfg)
    ckpt = CheckpointParams(workdir, step)
    model = build_hour_llava(mcfg, mcfg.dtype, mcfg.param_dtype)  # abstract: shapes and paths only

    def read(path):
        return ckpt.read(".".join(str(p) for p in path))

    if jax.process_index() != 0:
        # Several processes (export_hf after a multi-host run): orbax reads are collective (a
        # barrier each), so the others read along, tensor for tensor, and process 0 writes.
        for _ in iter_hf_tensors(model, hour_llava_hf_rules(mcfg), read=read):
            pass
        return out
    save_pretrained(model, mcfg, out, dtype=dtype, max_shard_bytes=max_shard_bytes, overwrite=overwrite, read=read)
    try:
        copy_tokenizer(tok, out)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)  # all or nothing, as save_pretrained
        raise
    return out
