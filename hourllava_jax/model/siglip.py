"""SigLIP vision tower (design §1.1) as Flax NNX modules.

Attribute names mirror Hugging Face's ``SiglipVisionModel`` (``embeddings.patch_embedding``,
``encoder.layers[i].self_attn.q_proj``, ``post_layernorm``, ``head.*``) so the key rules in
``convert/siglip_keys.py`` read one-to-one. Images are NHWC and already normalised
(mean 0.5, std 0.5). The features Hour-LLaVA uses are a hidden state chosen by
``VisionConfig.feature_layer``, *without* ``post_layernorm``: only ``cfg.num_used_layers`` layers
run. ``post_layernorm`` and the pooling ``head`` are held so that checkpoints round-trip.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from hourllava_jax.config.model import VisionConfig
from hourllava_jax.kernels import BlockSizes, attention
from hourllava_jax.model.dense import Dense
from hourllava_jax.model.remat import normalize_remat, remat_call
from hourllava_jax.model.scan import scan_layers, stack_layers
from hourllava_jax.parallel.axes import CONV, EMBED, HEADS, MLP, NORM, param_init

Dtype = Any


def _linear(din: int, dout: int, axes: tuple[str, str], *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> Dense:
    """Linear with bias; kernel float[din, dout] carries ``axes``, bias the output axis."""
    return Dense(
        din, dout, dtype=dtype, param_dtype=param_dtype,
        kernel_init=param_init(nnx.initializers.lecun_normal(), axes),
        bias_init=param_init(nnx.initializers.zeros_init(), (axes[1],)),
        rngs=rngs,
    )  # fmt: skip


def _layer_norm(dim: int, eps: float, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    # Two-pass variance, as torch computes it: the fast E[x^2]-E[x]^2 form costs parity (~1e-5).
    return nnx.LayerNorm(
        dim, epsilon=eps, dtype=dtype, param_dtype=param_dtype, use_fast_variance=False,
        scale_init=param_init(nnx.initializers.ones_init(), (NORM,)),
        bias_init=param_init(nnx.initializers.zeros_init(), (NORM,)),
        rngs=rngs,
    )  # fmt: skip


def _gelu_tanh(x: jax.Array) -> jax.Array:
    """SigLIP's ``gelu_pytorch_tanh`` (tanh approximation)."""
    return jax.nn.gelu(x, approximate=True)


class SiglipVisionEmbeddings(nnx.Module):
    """Patchify convolution (kernel = stride = patch, VALID) plus learned position embeddings."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        self.cfg = cfg
        p = cfg.patch_size
        self.patch_embedding = nnx.Conv(
            cfg.num_channels, cfg.hidden_size, kernel_size=(p, p), strides=(p, p), padding="VALID",
            dtype=dtype, param_dtype=param_dtype,
            kernel_init=param_init(nnx.initializers.lecun_normal(), (CONV, CONV, CONV, EMBED)),
            bias_init=param_init(nnx.initializers.zeros_init(), (EMBED,)),
            rngs=rngs,
        )  # fmt: skip
        self.position_embedding = nnx.Embed(
            cfg.num_patches, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
            embedding_init=param_init(nnx.initializers.normal(cfg.hidden_size**-0.5), (None, EMBED)),
            rngs=rngs,
        )  # fmt: skip

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels float[N, H, W, C] -> float[N, grid*grid, D] (row-major patches)."""
        cfg = self.cfg
        n, h, w, c = pixels.shape
        if c != cfg.num_channels or h // cfg.patch_size != cfg.grid or w // cfg.patch_size != cfg.grid:
            raise ValueError(
                f"SigLIP expects NHWC pixels [N, {cfg.image_size}, {cfg.image_size}, {cfg.num_channels}] "
                f"(any H, W with H // {cfg.patch_size} == {cfg.grid}), got {tuple(pixels.shape)}"
            )
        x = self.patch_embedding(pixels)  # [N, grid, grid, D]; pixels past the last whole patch are dropped
        x = x.reshape(n, cfg.num_patches, cfg.hidden_size)
        return x + self.position_embedding.embedding[...].astype(x.dtype)[None]


class SiglipAttention(nnx.Module):
    """Bidirectional multi-head self-attention with biased q/k/v/out projections."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, attention_impl: str,
                 attention_blocks: BlockSizes | None = None, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = _linear(d, d, (EMBED, HEADS), **kw)
        self.k_proj = _linear(d, d, (EMBED, HEADS), **kw)
        self.v_proj = _linear(d, d, (EMBED, HEADS), **kw)
        self.out_proj = _linear(d, d, (HEADS, EMBED), **kw)
        self.num_heads = cfg.num_attention_heads
        self.attention_impl = attention_impl
        self.attention_blocks = attention_blocks

    def __call__(self, x: jax.Array) -> jax.Array:
        """x float[N, L, D] -> float[N, L, D]."""
        n, length, d = x.shape
        split = lambda t: t.reshape(n, length, self.num_heads, d // self.num_heads)  # noqa: E731
        o = attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)), impl=self.attention_impl,
                      block_sizes=self.attention_blocks)
        return self.out_proj(o.reshape(n, length, d))


class SiglipMLP(nnx.Module):
    """fc1 -> tanh-GELU -> fc2."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.fc1 = _linear(cfg.hidden_size, cfg.intermediate_size, (EMBED, MLP), **kw)
        self.fc2 = _linear(cfg.intermediate_size, cfg.hidden_size, (MLP, EMBED), **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(_gelu_tanh(self.fc1(x)))


class SiglipEncoderLayer(nnx.Module):
    """Pre-LN transformer block: x + attn(LN1(x)), then x + mlp(LN2(x))."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, attention_impl: str,
                 attention_blocks: BlockSizes | None = None, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.layer_norm1 = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.self_attn = SiglipAttention(cfg, attention_impl=attention_impl, attention_blocks=attention_blocks, **kw)
        self.layer_norm2 = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.mlp = SiglipMLP(cfg, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x float[N, L, D] -> float[N, L, D]."""
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


def _layer_step(layer, x):
    return layer(x)


class SiglipEncoder(nnx.Module):
    """``cfg.num_hidden_layers`` encoder layers; ``__call__`` runs the first ``num_layers``.

    scan_layers: one stack of float[layers, ...] Params run as a scanned body (model/scan.py).
    """

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, attention_impl: str, remat: str | bool,
                 attention_blocks: BlockSizes | None = None, scan_layers: bool = False, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, attention_blocks=attention_blocks)
        if scan_layers:
            self.layers = stack_layers(lambda r: SiglipEncoderLayer(cfg, **kw, rngs=r), cfg.num_hidden_layers, rngs)
        else:
            self.layers = nnx.List([SiglipEncoderLayer(cfg, **kw, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.remat = normalize_remat(remat)
        self.scan_layers = scan_layers

    def __call__(self, x: jax.Array, num_layers: int) -> jax.Array:
        """x float[N, L, D] -> float[N, L, D] after layers[:num_layers]."""
        if self.scan_layers:
            return scan_layers(self.layers, _layer_step, x, remat=self.remat, length=num_layers)
        for layer in self.layers[:num_layers]:
            x = remat_call(self.remat, layer, _layer_step, x)
        return x


class SiglipHeadAttention(nnx.Module):
    """torch ``nn.MultiheadAttention`` as the pooling head holds it: fused ``in_proj`` [q | k | v]."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, attention_impl: str, rngs: nnx.Rngs):
        d = cfg.hidden_size
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.in_proj = _linear(d, 3 * d, (EMBED, HEADS), **kw)
        self.out_proj = _linear(d, d, (HEADS, EMBED), **kw)
        self.num_heads = cfg.num_attention_heads
        self.attention_impl = attention_impl

    def __call__(self, q_in: jax.Array, kv_in: jax.Array) -> jax.Array:
        """q_in float[N, Lq, D], kv_in float[N, Lk, D] -> float[N, Lq, D]."""
        d = q_in.shape[-1]
        heads = lambda t: t.reshape(*t.shape[:2], self.num_heads, d // self.num_heads)  # noqa: E731
        # Fused projection then slicing: wastes the probe's k/v and the tokens' q, which is cheap and
        # off Hour-LLaVA's path (the release drops the head).
        q = self.in_proj(q_in)[..., :d]
        k, v = jnp.split(self.in_proj(kv_in)[..., d:], 2, axis=-1)
        o = attention(heads(q), heads(k), heads(v), impl=self.attention_impl)
        return self.out_proj(o.reshape(*q_in.shape[:2], d))


class SiglipPoolingHead(nnx.Module):
    """Multi-head attention pooling: a learned probe attends over the tokens, then LN + MLP."""

    def __init__(self, cfg: VisionConfig, *, dtype: Dtype, param_dtype: Dtype, attention_impl: str, rngs: nnx.Rngs):
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.probe = nnx.Param(param_init(nnx.initializers.normal(1.0), (None, None, EMBED))(rngs.params(), (1, 1, cfg.hidden_size), param_dtype))
        self.attention = SiglipHeadAttention(cfg, attention_impl=attention_impl, **kw)
        self.layernorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw)
        self.mlp = SiglipMLP(cfg, **kw)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x float[N, L, D] (post-layernorm) -> float[N, D]."""
        probe = jnp.broadcast_to(self.probe[...].astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
        h = self.attention(probe, x)
        h = h + self.mlp(self.layernorm(h))
        return h[:, 0]


class SiglipVisionTower(nnx.Module):
    """SigLIP vision tower: pixels float[N, H, W, C] -> features float[N, grid*grid, D].

    For so400m-patch14-384 as the release uses it (26 held layers, feature_layer -1, or the full
    27-layer model with feature_layer -2): float[N, 384, 384, 3] -> float[N, 729, 1152].
    ``remat``: a :mod:`~hourllava_jax.model.remat` policy name per layer (stage 2 trains SigLIP);
    ``True``/``False`` mean ``full``/``none``.
    """

    def __init__(
        self,
        cfg: VisionConfig,
        *,
        dtype: Dtype = jnp.float32,
        param_dtype: Dtype = jnp.float32,
        attention_impl: str = "auto",
        remat: str | bool = "none",
        attention_blocks: BlockSizes | None = None,
        scan_layers: bool = False,
        rngs: nnx.Rngs,
    ):
        cfg.validate()
        self.cfg = cfg
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.embeddings = SiglipVisionEmbeddings(cfg, **kw)
        self.encoder = SiglipEncoder(cfg, attention_impl=attention_impl, remat=remat, attention_blocks=attention_blocks,
                                     scan_layers=scan_layers, **kw)
        self.post_layernorm = _layer_norm(cfg.hidden_size, cfg.layer_norm_eps, **kw) if cfg.has_post_layernorm else None
        self.head = SiglipPoolingHead(cfg, attention_impl=attention_impl, **kw) if cfg.vision_use_head else None

    def __call__(self, pixels: jax.Array) -> jax.Array:
        """pixels float[N, H, W, C] (normalised) -> float[N, grid*grid, D]: HF
        ``hidden_states[cfg.feature_layer]``, no post-layernorm (design §1.1)."""
        return self.encoder(self.embeddings(pixels), self.cfg.num_used_layers)

    def pooled(self, pixels: jax.Array) -> jax.Array:
        """pixels float[N, H, W, C] -> float[N, D]: HF ``pooler_output`` (all held layers,
        post-layernorm, attention-pooling head). Not used by Hour-LLaVA."""
        if self.post_layernorm is None or self.head is None:
            raise ValueError("pooled() needs a tower built with has_post_layernorm=True and vision_use_head=True")
        x = self.encoder(self.embeddings(pixels), self.cfg.num_hidden_layers)
        return self.head(self.post_layernorm(x))
