"""A plain PyTorch MemAug written from design §1.3 (test-only reference; no masks, batch of one).

Names follow the release: ``layers.{i}.self_attn.Wqkv``, ``self_attn.Wo``, ``cross_attn.Wq``,
``cross_attn.Wkv``, ``cross_attn.Wo``, ``mlp.0`` / ``mlp.2``, ``norm1..3``.
"""

from __future__ import annotations

import torch
from torch import nn


def _rope(x: torch.Tensor, pos: torch.Tensor, theta: float) -> torch.Tensor:
    """x [L, N, D]; rotate-half RoPE on x[..., :D/2], angles in fp32 from the position ids."""
    d = x.shape[-1]
    r = d // 2
    inv_freq = 1.0 / (theta ** (torch.arange(0, r, 2, dtype=torch.float32) / r))
    ang = torch.outer(pos.to(torch.float32), inv_freq)  # [L, r/2]
    cos, sin = ang.cos().to(x.dtype)[:, None, :], ang.sin().to(x.dtype)[:, None, :]
    x1, x2, rest = x[..., : r // 2], x[..., r // 2 : r], x[..., r:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin, rest], dim=-1)


def _attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [Lq, H, D], k/v [Lk, K, D]: GQA by repeat_interleave of kv heads, no mask."""
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    s = torch.einsum("qhd,khd->hqk", q, k) / q.shape[-1] ** 0.5
    return torch.einsum("hqk,khd->qhd", s.softmax(-1), v)


class Attn(nn.Module):
    def __init__(self, hidden: int, heads: int, kv_heads: int, theta: float, cross: bool):
        super().__init__()
        self.h, self.k, self.d, self.theta, self.cross = heads, kv_heads, hidden // heads, theta, cross
        if cross:
            self.Wq = nn.Linear(hidden, heads * self.d)
            self.Wkv = nn.Linear(hidden, 2 * kv_heads * self.d)
        else:
            self.Wqkv = nn.Linear(hidden, (heads + 2 * kv_heads) * self.d)
        self.Wo = nn.Linear(hidden, hidden)

    def forward(self, x, mem, pq, pk):
        hd, kd = self.h * self.d, self.k * self.d
        if self.cross:
            q, kv = self.Wq(x), self.Wkv(mem)
            k, v = kv[:, :kd], kv[:, kd:]
        else:
            qkv = self.Wqkv(x)
            q, k, v = qkv[:, :hd], qkv[:, hd : hd + kd], qkv[:, hd + kd :]
            pk = pq
        q = _rope(q.reshape(q.shape[0], self.h, self.d), pq, self.theta)
        k = _rope(k.reshape(k.shape[0], self.k, self.d), pk, self.theta)
        v = v.reshape(v.shape[0], self.k, self.d)
        return self.Wo(_attend(q, k, v).reshape(x.shape[0], -1))


class Block(nn.Module):
    def __init__(self, hidden, heads, kv_heads, theta):
        super().__init__()
        self.self_attn = Attn(hidden, heads, kv_heads, theta, cross=False)
        self.cross_attn = Attn(hidden, heads, kv_heads, theta, cross=True)
        self.mlp = nn.Sequential(nn.Linear(hidden, 4 * hidden), nn.GELU(), nn.Linear(4 * hidden, hidden))
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(hidden, eps=1e-5) for _ in range(3))

    def forward(self, x, mem, pq, pk):
        x = self.norm1(x + self.self_attn(x, None, pq, None))
        x = self.norm2(x + self.cross_attn(x, mem, pq, pk))
        return self.norm3(x + self.mlp(x))


class MemAugRef(nn.Module):
    """x [Lq, H], memory [Lk, H], positions [Lq] / [Lk] -> [Lq, H]."""

    def __init__(self, hidden, heads, kv_heads, theta, depth):
        super().__init__()
        self.layers = nn.ModuleList([Block(hidden, heads, kv_heads, theta) for _ in range(depth)])

    def forward(self, x, mem, pq, pk):
        for layer in self.layers:
            x = layer(x, mem, pq, pk)
        return x
