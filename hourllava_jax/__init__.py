"""hourllava_jax: Hour-LLaVA (VideoMarathon) in JAX / Flax NNX.

Subpackages, in the direction data flows: ``data`` (records, video, features, pipelines) ->
``memory`` (the memory stage: host layout, in-graph gather, forgetting, the reference) ->
``model`` (SigLIP, projector, MemAug, Qwen2, HourLlava) -> ``train`` / ``infer`` / ``eval``;
``kernels`` (attention), ``parallel`` (meshes, logical axes), ``convert`` (Hugging Face
checkpoints and config.json), ``config`` (typed configs). Imports flow the other way; see
docs/model.md, "Layout".
"""

from __future__ import annotations

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy: importing the package must stay cheap (data workers import hourllava_jax.data only).
    if name == "generate":
        from hourllava_jax.infer.generate import generate

        return generate
    if name in ("load_pretrained", "save_pretrained"):
        from hourllava_jax import convert

        return getattr(convert, name)
    raise AttributeError(f"module 'hourllava_jax' has no attribute {name!r}")


__all__ = ["__version__", "generate", "load_pretrained", "save_pretrained"]
