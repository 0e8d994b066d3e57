"""The full Hour-LLaVA checkpoint layout (design §1, LLaVA-NeXT names) <-> :class:`HourLlava`.

=================================================  ======================================
HF key                                             HourLlava parameter
=================================================  ======================================
``model.vision_tower.vision_tower.vision_model.*``  ``vision_tower.*`` (26 SigLIP layers)
``model.mm_projector.{0,2}.*``                      ``projector.linear_{0,2}.*``
``model.vision_resampler.layers.{i}.*``             ``memaug.layers[i].*``
``model.image_newline``                             ``image_newline``
``model.embed_tokens`` / ``model.layers.{i}`` /     ``llm.*``
``model.norm`` / ``lm_head``
=================================================  ======================================

The ``config.json`` side of this layout is in :mod:`hourllava_jax.convert.hf_config`.
"""

from __future__ import annotations

from typing import Any

from flax import nnx

from hourllava_jax.config import HourLlavaConfig
from hourllava_jax.convert.mapping import TensorRule
from hourllava_jax.convert.memaug_keys import memaug_hf_rules
from hourllava_jax.convert.projector_keys import projector_hf_rules
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules
from hourllava_jax.convert.siglip_keys import HOURLLAVA_PREFIX, siglip_hf_rules

RESAMPLER_PREFIX = "model.vision_resampler."
NEWLINE_KEY = "model.image_newline"


def _prefixed(rules: list[TensorRule], path_prefix: tuple) -> list[TensorRule]:
    return [TensorRule(r.hf_key, path_prefix + tuple(r.path), r.perm) for r in rules]


def hour_llava_hf_rules(cfg: HourLlavaConfig) -> list[TensorRule]:
    """Every HourLlava parameter's HF key, in checkpoint order."""
    rules = _prefixed(siglip_hf_rules(cfg.vision, HOURLLAVA_PREFIX), ("vision_tower",))
    rules += _prefixed(projector_hf_rules("model.mm_projector."), ("projector",))
    if cfg.use_memaug:
        rules += _prefixed(memaug_hf_rules(cfg, RESAMPLER_PREFIX), ("memaug",))
    rules.append(TensorRule(NEWLINE_KEY, ("image_newline",)))
    rules += qwen2_hf_rules(cfg.llm, prefix="model.", path_prefix=("llm",))
    return rules


def build_hour_llava(cfg: HourLlavaConfig, dtype: Any, param_dtype: Any) -> nnx.Module:
    """The model, abstract (no parameter memory) until the converter fills it."""
    from hourllava_jax.model.hour_llava import HourLlava

    return nnx.eval_shape(lambda: HourLlava(cfg, dtype=dtype, param_dtype=param_dtype, rngs=nnx.Rngs(0)))
