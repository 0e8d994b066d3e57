"""The Qwen2 / Qwen2.5 decoder of Hour-LLaVA (design §1, LLM row), mirroring HF ``Qwen2ForCausalLM``.

Attribute names follow HF (``embed_tokens``, ``layers[i].self_attn.q_proj``, ``mlp.gate_proj``,
``norm``, ``lm_head``) so ``convert/qwen2_keys.py`` is a plain renaming. Attention goes through
``hourllava_jax.kernels.attention`` (grouped-query heads, never repeated in memory). With a
``KVCache`` the forward writes the new keys/values and attends over the whole cache.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from hourllava_jax.config.model import LLMConfig
from hourllava_jax.kernels import BlockSizes, attention
from hourllava_jax.model.dense import Dense, matmul
from hourllava_jax.model.kv_cache import KVCache
from hourllava_jax.model.remat import normalize_remat, remat_call
from hourllava_jax.model.rope import apply_rope, rope_cos_sin
from hourllava_jax.model.scan import layer_at, scan_layers, stack_layers
from hourllava_jax.parallel.axes import EMBED, HEADS, KV_HEADS, MLP, NORM, VOCAB, param_init

QWEN2_INIT_STD = 0.02  # HF Qwen2 initializer_range; checkpoints overwrite it
_W_INIT = nnx.initializers.normal(QWEN2_INIT_STD)


class RMSNorm(nnx.Module):
    """x float[..., H] -> same dtype. Normalised in fp32 then cast back before the scale, as HF does."""

    def __init__(self, dim: int, eps: float, *, param_dtype=jnp.float32, rngs: nnx.Rngs):
        self.weight = nnx.Param(param_init(nnx.initializers.ones, (NORM,))(rngs.params(), (dim,), param_dtype))
        self.eps = eps

    @jax.named_scope("norm")
    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...].astype(x.dtype) * x32.astype(x.dtype)


def _linear(din: int, dout: int, axes: tuple[str, str], *, bias: bool, dtype, param_dtype, rngs: nnx.Rngs) -> Dense:
    return Dense(din, dout, use_bias=bias, dtype=dtype, param_dtype=param_dtype,
                      kernel_init=param_init(_W_INIT, axes), bias_init=param_init(nnx.initializers.zeros, axes[1:]), rngs=rngs)  # fmt: skip


class Qwen2Attention(nnx.Module):
    """Causal grouped-query self-attention with full-head RoPE; q/k/v biased, o not."""

    def __init__(self, cfg: LLMConfig, *, dtype, param_dtype, attention_impl: str, attention_blocks: BlockSizes | None = None, rngs: nnx.Rngs):
        h, d = cfg.hidden_size, cfg.kv_head_dim
        self.num_heads, self.num_kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, d
        kw = dict(dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.q_proj = _linear(h, self.num_heads * d, (EMBED, HEADS), bias=True, **kw)
        self.k_proj = _linear(h, self.num_kv_heads * d, (EMBED, KV_HEADS), bias=True, **kw)
        self.v_proj = _linear(h, self.num_kv_heads * d, (EMBED, KV_HEADS), bias=True, **kw)
        self.o_proj = _linear(self.num_heads * d, h, (HEADS, EMBED), bias=False, **kw)
        self.attention_impl = attention_impl
        self.attention_blocks = attention_blocks

    def __call__(self, x, cos, sin, kv_mask, cache_kv=None, q_offset=0):
        """x float[B, L, H]; cos/sin [B, L, D]; kv_mask bool[B, Lk] or None.

        cache_kv: None, or (cache, layer) -> keys/values are written into the cache and the
        attention runs over its S slots with ``q_offset`` = the write index.
        Returns (float[B, L, H], (k, v) full float[B, Lk, K, D] for the cache).
        """
        b, l, _ = x.shape
        with jax.named_scope("attn_proj"):
            q = self.q_proj(x).reshape(b, l, self.num_heads, self.head_dim)
            k = self.k_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim)
            v = self.v_proj(x).reshape(b, l, self.num_kv_heads, self.head_dim)
        with jax.named_scope("rope"):
            q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache_kv is not None:
            cache, layer = cache_kv
            k, v = cache.write(layer, k, v)
            k, v = k.astype(q.dtype), v.astype(q.dtype)
        with jax.named_scope("attention"):
            o = attention(q, k, v, causal=True, q_offset=q_offset, kv_mask=kv_mask, impl=self.attention_impl,
                          block_sizes=self.attention_blocks)
        with jax.named_scope("attn_proj"):
            return self.o_proj(o.reshape(b, l, self.num_heads * self.head_dim)), (k, v)


class Qwen2MLP(nnx.Module):
    """SwiGLU: down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, cfg: LLMConfig, *, dtype, param_dtype, rngs: nnx.Rngs):
        kw = dict(bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)
        self.gate_proj = _linear(cfg.hidden_size, cfg.intermediate_size, (EMBED, MLP), **kw)
        self.up_proj = _linear(cfg.hidden_size, cfg.intermediate_size, (EMBED, MLP), **kw)
        self.down_proj = _linear(cfg.intermediate_size, cfg.hidden_size, (MLP, EMBED), **kw)

    @jax.named_scope("mlp")
    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class Qwen2DecoderLayer(nnx.Module):
    """Pre-norm block: x + attn(norm(x)), then x + mlp(norm(x))."""

    def __init__(self, cfg: LLMConfig, *, dtype, param_dtype, attention_impl: str, attention_blocks: BlockSizes | None = None, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.self_attn = Qwen2Attention(cfg, dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl,
                                        attention_blocks=attention_blocks, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        self.mlp = Qwen2MLP(cfg, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    def __call__(self, x, cos, sin, kv_mask, cache_kv=None, q_offset=0):
        a, kv = self.self_attn(self.input_layernorm(x), cos, sin, kv_mask, cache_kv, q_offset)
        x = x + a
        return x + self.mlp(self.post_attention_layernorm(x)), kv


def _layer_step(layer, x, cos, sin, kv_mask):
    # Training path only (no cache): one decoder layer, hidden in -> hidden out.
    return layer(x, cos, sin, kv_mask)[0]


class Qwen2(nnx.Module):
    """Qwen2ForCausalLM. dtype: activations/compute; param_dtype: stored parameters.

    remat: policy name (model/remat.py; True = "full") for recomputing each decoder layer in the
      backward pass (design §3.1: gradient checkpointing).
    scan_layers: hold the decoder layers as one stack (float[layers, ...] Params, model/scan.py)
      and run them as one scanned body: the same function, compiled once instead of per layer.
    """

    def __init__(self, cfg: LLMConfig, *, dtype=jnp.float32, param_dtype=jnp.float32, attention_impl: str = "auto", remat: str | bool = "none",
                 attention_blocks: BlockSizes | None = None, scan_layers: bool = False, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        self.dtype = dtype
        self.remat = normalize_remat(remat)
        self.scan_layers = scan_layers
        self.embed_tokens = nnx.Embed(cfg.vocab_size, cfg.hidden_size, dtype=dtype, param_dtype=param_dtype,
                                      embedding_init=param_init(_W_INIT, (VOCAB, EMBED)), rngs=rngs)  # fmt: skip
        kw = dict(dtype=dtype, param_dtype=param_dtype, attention_impl=attention_impl, attention_blocks=attention_blocks)
        if scan_layers:
            self.layers = stack_layers(lambda r: Qwen2DecoderLayer(cfg, **kw, rngs=r), cfg.num_hidden_layers, rngs)
        else:
            self.layers = nnx.List([Qwen2DecoderLayer(cfg, **kw, rngs=rngs) for _ in range(cfg.num_hidden_layers)])
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps, param_dtype=param_dtype, rngs=rngs)
        if not cfg.tie_word_embeddings:
            self.lm_head = _linear(cfg.hidden_size, cfg.vocab_size, (EMBED, VOCAB), bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs)

    # --- pieces the Hour-LLaVA assembly and generation use --------------------------------------

    @jax.named_scope("embed")
    def embed(self, input_ids: jax.Array) -> jax.Array:
        """int32[B, L] -> float[B, L, H] (compute dtype): the LLM input table (design §2.4)."""
        return self.embed_tokens(input_ids)

    @jax.named_scope("lm_head")
    def logits(self, hidden: jax.Array) -> jax.Array:
        """float[..., H] final-normed hidden -> float[..., V] (tied: hidden @ embed_tokens.T)."""
        if self.cfg.tie_word_embeddings:
            # embed_tokens.attend, through the model's matmul (an f32 result, a CPU-friendly backward).
            dtype = jnp.dtype(self.dtype)
            return matmul(hidden, self.embed_tokens.embedding[...], dtype, True).astype(dtype)
        return self.lm_head(hidden)

    def init_cache(self, batch: int, max_len: int, dtype=None) -> KVCache:
        """An empty KVCache of ``max_len`` slots for this model (dtype: compute dtype by default)."""
        c = self.cfg
        return KVCache.init(num_layers=c.num_hidden_layers, batch=batch, max_len=max_len, num_kv_heads=c.num_key_value_heads,
                            head_dim=c.kv_head_dim, dtype=dtype or self.dtype)  # fmt: skip

    def hidden_states(self, input_ids=None, *, inputs_embeds=None, positions=None, attention_mask=None, cache: KVCache | None = None):
        """Final-normed hidden float[B, L, H] (and the new cache if ``cache`` is given).

        Exactly one of input_ids int32[B, L] / inputs_embeds float[B, L, H].
        positions int32[B, L]: RoPE positions; default arange(L) (+ cache.index with a cache),
          like HF's forward. Left-padded generation passes cumsum(mask) - 1 (generate.py does).
        attention_mask bool/int[B, L]: False/0 marks padding keys (any pattern).
        cache: KVCache; the L tokens go to slots [index, index + L), attention is over all S slots.
        """
        if (input_ids is None) == (inputs_embeds is None):
            raise ValueError("Qwen2: pass exactly one of input_ids and inputs_embeds")
        x = self.embed(input_ids) if inputs_embeds is None else inputs_embeds.astype(self.dtype)
        b, l, h = x.shape
        if h != self.cfg.hidden_size:
            raise ValueError(f"Qwen2: inputs_embeds width {h} != hidden_size {self.cfg.hidden_size}")
        start = 0 if cache is None else cache.index
        if positions is None:
            positions = jnp.broadcast_to(start + jnp.arange(l, dtype=jnp.int32), (b, l))
        elif positions.shape != (b, l):
            raise ValueError(f"Qwen2: positions must be int[{b}, {l}], got {positions.shape}")
        if attention_mask is not None and attention_mask.shape != (b, l):
            raise ValueError(f"Qwen2: attention_mask must be [{b}, {l}], got {attention_mask.shape}")
        cos, sin = rope_cos_sin(positions, self.cfg.kv_head_dim, self.cfg.rope_theta, x.dtype)

        if cache is None:
            kv_mask = None if attention_mask is None else attention_mask.astype(bool)
            if self.scan_layers:
                x = scan_layers(self.layers, _layer_step, x, cos, sin, kv_mask, remat=self.remat)
            else:
                for layer in self.layers:
                    x = remat_call(self.remat, layer, _layer_step, x, cos, sin, kv_mask)
            return self.norm(x)

        if b != cache.mask.shape[0]:
            raise ValueError(f"Qwen2: batch {b} does not match the cache's {cache.mask.shape[0]}")
        if not isinstance(cache.index, jax.core.Tracer) and int(cache.index) + l > cache.max_len:
            # dynamic_update_slice would clamp and silently overwrite; under jit the caller sizes it.
            raise ValueError(f"Qwen2: {l} tokens at slot {int(cache.index)} overflow a cache of {cache.max_len} slots")
        step_mask = jnp.ones((b, l), bool) if attention_mask is None else attention_mask.astype(bool)
        kv_mask = cache.with_mask(step_mask)
        keys, values = [], []
        # Decoding steps are short: a stack is unrolled here (one layer view per index).
        layers = [layer_at(self.layers, i) for i in range(self.cfg.num_hidden_layers)] if self.scan_layers else self.layers
        for i, layer in enumerate(layers):
            x, (k, v) = layer(x, cos, sin, kv_mask, (cache, i), cache.index)
            keys.append(k)
            values.append(v)
        return self.norm(x), cache.advanced(keys, values, kv_mask, l)

    def __call__(self, input_ids=None, *, inputs_embeds=None, positions=None, attention_mask=None, cache: KVCache | None = None):
        """logits float[B, L, V] (and the new cache if ``cache`` is given); args as :meth:`hidden_states`."""
        out = self.hidden_states(input_ids, inputs_embeds=inputs_embeds, positions=positions, attention_mask=attention_mask, cache=cache)
        if cache is None:
            return self.logits(out)
        return self.logits(out[0]), out[1]
