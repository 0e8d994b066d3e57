"""Hugging Face checkpoints <-> hourllava_jax models (streamed, sharded, atomic).

``config, model = load_pretrained(path, dtype=jnp.float32)``; ``save_pretrained(model, config, path)``.
"""

from hourllava_jax.convert.api import detect_architecture, load_pretrained, save_pretrained
from hourllava_jax.convert.mapping import ConversionError, TensorRule, params_from_tensors, tensors_from_params

__all__ = ["ConversionError", "TensorRule", "detect_architecture", "load_pretrained", "params_from_tensors", "save_pretrained", "tensors_from_params"]
