"""HF ``Qwen2ForCausalLM`` tensor names <-> ``model.qwen2.Qwen2`` parameter paths (design §8.5, key names).

Torch Linear weights are (out, in); flax kernels are (in, out): perm (1, 0). Biases, norms and the
embedding table keep their layout. An Hour-LLaVA checkpoint holds the same keys under ``model.``
(design §1, LLaVA-NeXT names); a tied model has no ``lm_head.weight``.
"""

from __future__ import annotations

from hourllava_jax.config.model import LLMConfig
from hourllava_jax.convert.mapping import TensorRule

_T = (1, 0)


def qwen2_hf_rules(cfg: LLMConfig, prefix: str = "model.", lm_head_key: str = "lm_head.weight", path_prefix: tuple = ()) -> list[TensorRule]:
    """Rules for every Qwen2 parameter. path_prefix: where the Qwen2 module sits in a bigger model
    (e.g. ``("llm",)`` inside Hour-LLaVA)."""
    p = tuple(path_prefix)
    rules = [TensorRule(f"{prefix}embed_tokens.weight", p + ("embed_tokens", "embedding"))]
    for i in range(cfg.num_hidden_layers):
        hf, jx = f"{prefix}layers.{i}.", p + ("layers", i)
        rules += [
            TensorRule(hf + "input_layernorm.weight", jx + ("input_layernorm", "weight")),
            TensorRule(hf + "post_attention_layernorm.weight", jx + ("post_attention_layernorm", "weight")),
            TensorRule(hf + "self_attn.o_proj.weight", jx + ("self_attn", "o_proj", "kernel"), _T),
        ]
        for name in ("q_proj", "k_proj", "v_proj"):
            rules += [
                TensorRule(hf + f"self_attn.{name}.weight", jx + ("self_attn", name, "kernel"), _T),
                TensorRule(hf + f"self_attn.{name}.bias", jx + ("self_attn", name, "bias")),
            ]
        for name in ("gate_proj", "up_proj", "down_proj"):
            rules.append(TensorRule(hf + f"mlp.{name}.weight", jx + ("mlp", name, "kernel"), _T))
    rules.append(TensorRule(f"{prefix}norm.weight", p + ("norm", "weight")))
    if not cfg.tie_word_embeddings:
        rules.append(TensorRule(lm_head_key, p + ("lm_head", "kernel"), _T))
    return rules
