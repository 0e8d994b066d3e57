"""Hugging Face SigLIP vision keys <-> :class:`~hourllava_jax.model.siglip.SiglipVisionTower` params.

Three key layouts hold the same tensors under different prefixes (design §1, design §8.5):
``vision_model.`` (hub ``SiglipVisionModel`` / ``SiglipModel`` checkpoints), ``""`` (a bare
``SiglipVisionModel`` saved by transformers 5) and ``model.vision_tower.vision_tower.vision_model.``
(Hour-LLaVA / LLaVA-NeXT checkpoints, whose tower already lacks its last layer and head).
"""

from __future__ import annotations

from collections.abc import Iterable

from hourllava_jax.config.model import VisionConfig
from hourllava_jax.convert.mapping import ConversionError, TensorRule

HUB_PREFIX = "vision_model."
BARE_PREFIX = ""
HOURLLAVA_PREFIX = "model.vision_tower.vision_tower.vision_model."

_LINEAR = (1, 0)  # torch Linear weight (out, in) -> flax kernel (in, out)
_CONV = (2, 3, 1, 0)  # torch Conv2d weight (out, in, kh, kw) -> flax kernel (kh, kw, in, out)


def _linear(hf: str, path: tuple) -> list[TensorRule]:
    return [TensorRule(f"{hf}.weight", (*path, "kernel"), _LINEAR), TensorRule(f"{hf}.bias", (*path, "bias"))]


def _norm(hf: str, path: tuple) -> list[TensorRule]:
    return [TensorRule(f"{hf}.weight", (*path, "scale")), TensorRule(f"{hf}.bias", (*path, "bias"))]


def _mlp(hf: str, path: tuple) -> list[TensorRule]:
    return _linear(f"{hf}.fc1", (*path, "fc1")) + _linear(f"{hf}.fc2", (*path, "fc2"))


def siglip_hf_rules(cfg: VisionConfig, prefix: str = HUB_PREFIX) -> list[TensorRule]:
    """Rules for every parameter the tower holds: all ``cfg.num_hidden_layers`` layers (not
    only the used ones), ``post_layernorm`` if ``cfg.has_post_layernorm``, ``head.*`` if
    ``cfg.vision_use_head``. ``prefix`` is prepended verbatim (include the trailing dot)."""
    p = prefix
    rules = [
        TensorRule(f"{p}embeddings.patch_embedding.weight", ("embeddings", "patch_embedding", "kernel"), _CONV),
        TensorRule(f"{p}embeddings.patch_embedding.bias", ("embeddings", "patch_embedding", "bias")),
        TensorRule(f"{p}embeddings.position_embedding.weight", ("embeddings", "position_embedding", "embedding")),
    ]
    for i in range(cfg.num_hidden_layers):
        hf, path = f"{p}encoder.layers.{i}", ("encoder", "layers", i)
        rules += _norm(f"{hf}.layer_norm1", (*path, "layer_norm1"))
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            rules += _linear(f"{hf}.self_attn.{proj}", (*path, "self_attn", proj))
        rules += _norm(f"{hf}.layer_norm2", (*path, "layer_norm2"))
        rules += _mlp(f"{hf}.mlp", (*path, "mlp"))
    if cfg.has_post_layernorm:
        rules += _norm(f"{p}post_layernorm", ("post_layernorm",))
    if cfg.vision_use_head:
        rules += [
            TensorRule(f"{p}head.probe", ("head", "probe")),
            # torch MultiheadAttention keeps q/k/v fused as in_proj_weight (3D, D), [q | k | v].
            TensorRule(f"{p}head.attention.in_proj_weight", ("head", "attention", "in_proj", "kernel"), _LINEAR),
            TensorRule(f"{p}head.attention.in_proj_bias", ("head", "attention", "in_proj", "bias")),
        ]
        rules += _linear(f"{p}head.attention.out_proj", ("head", "attention", "out_proj"))
        rules += _norm(f"{p}head.layernorm", ("head", "layernorm"))
        rules += _mlp(f"{p}head.mlp", ("head", "mlp"))
    return rules


def siglip_prefix(keys: Iterable[str]) -> str:
    """The prefix under which ``keys`` hold a SigLIP vision tower, e.g. ``"vision_model."``,
    ``""`` or :data:`HOURLLAVA_PREFIX`; found from the patch-embedding weight's key."""
    anchor = "embeddings.patch_embedding.weight"
    found = sorted({k[: -len(anchor)] for k in keys if k.endswith(anchor) and (k == anchor or k[: -len(anchor)].endswith("."))})
    if len(found) != 1:
        raise ConversionError(f"expected exactly one '*{anchor}' key to locate the SigLIP tower, found prefixes {found}")
    return found[0]


def siglip_num_layers(keys: Iterable[str], prefix: str) -> int:
    """How many encoder layers the checkpoint holds under ``prefix`` (26 for Hour-LLaVA)."""
    head = f"{prefix}encoder.layers."
    ids = {int(k[len(head) :].split(".", 1)[0]) for k in keys if k.startswith(head)}
    if ids != set(range(len(ids))):
        raise ConversionError(f"encoder layer ids under '{head}' are not contiguous from 0: {sorted(ids)}")
    return len(ids)
