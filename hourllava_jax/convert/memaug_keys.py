"""The release's ``vision_resampler`` tensor names <-> :class:`~hourllava_jax.model.memaug.MemAug`
parameter paths (design §1.3). Attribute names match the release's one to one; torch Linear
weights are (out, in), flax kernels (in, out)."""

from __future__ import annotations

from typing import Any

from hourllava_jax.convert.mapping import TensorRule


def memaug_hf_rules(cfg: Any, prefix: str = "model.vision_resampler.") -> list[TensorRule]:
    """A rule (hf_key, nnx state path, perm) for every MemAug parameter.

    perm (1, 0) for Linear weights (torch stores (out, in), flax kernels are (in, out)); None
    for 1-D tensors. LayerNorm ``weight`` is flax's ``scale``. ``cfg``: anything with
    ``.memaug.depth`` (a :class:`~hourllava_jax.config.HourLlavaConfig` or ``MemAug.dims``).
    """
    linears = [("self_attn.Wqkv", ("self_attn", "Wqkv")), ("self_attn.Wo", ("self_attn", "Wo")),
               ("cross_attn.Wq", ("cross_attn", "Wq")), ("cross_attn.Wkv", ("cross_attn", "Wkv")),
               ("cross_attn.Wo", ("cross_attn", "Wo")), ("mlp.0", ("mlp", "fc0")), ("mlp.2", ("mlp", "fc2"))]
    rules = []
    for i in range(cfg.memaug.depth):
        base = f"{prefix}layers.{i}."
        for hf, path in linears:
            rules.append(TensorRule(f"{base}{hf}.weight", ("layers", i, *path, "kernel"), (1, 0)))
            rules.append(TensorRule(f"{base}{hf}.bias", ("layers", i, *path, "bias")))
        for n in ("norm1", "norm2", "norm3"):
            rules.append(TensorRule(f"{base}{n}.weight", ("layers", i, n, "scale")))
            rules.append(TensorRule(f"{base}{n}.bias", ("layers", i, n, "bias")))
    return rules


__all__ = ["memaug_hf_rules"]
