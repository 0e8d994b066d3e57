"""Shared test helpers: tiny configs and HF Qwen2ForCausalLM twins of ``Qwen2`` (torch in tests only)."""

from __future__ import annotations

import dataclasses

import numpy as np
from flax import nnx

from hourllava_jax.config.model import LLMConfig
from hourllava_jax.convert.hf_config import llm_to_hf_config
from hourllava_jax.convert.mapping import params_from_tensors
from hourllava_jax.convert.qwen2_keys import qwen2_hf_rules
from hourllava_jax.model.qwen2 import Qwen2


def tiny_cfg(**overrides) -> LLMConfig:
    base = dict(vocab_size=97, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                max_position_embeddings=512, bos_token_id=None, eos_token_id=96, pad_token_id=0)  # fmt: skip
    return dataclasses.replace(LLMConfig(**base), **overrides)


def hf_twin(cfg: LLMConfig, torch, seed: int = 0, attention_impl: str = "reference", weight_scale: float = 1.0):
    """(HF model in eval mode, JAX Qwen2 with the same weights). Biases/norms randomised too.

    weight_scale > 1 makes the random model less degenerate (greedy decoding of an N(0, 0.02)
    model repeats one token; generation tests want varied continuations)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    hf_cfg = Qwen2Config(**llm_to_hf_config(cfg), attn_implementation="eager")
    hf = Qwen2ForCausalLM(hf_cfg).eval()
    with torch.no_grad():  # HF inits biases 0 and norms 1: randomise so the test sees them
        for name, p in hf.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
            elif weight_scale != 1.0:
                p.mul_(weight_scale)
    tensors = {k: v.detach().numpy().copy() for k, v in hf.state_dict().items()}
    if cfg.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    model = Qwen2(cfg, attention_impl=attention_impl, rngs=nnx.Rngs(0))
    params_from_tensors(model, tensors, qwen2_hf_rules(cfg))
    return hf, model


def to_np(t) -> np.ndarray:
    return t.detach().numpy()
