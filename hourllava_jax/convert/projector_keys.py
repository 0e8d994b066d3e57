"""The release's ``mm_projector`` tensor names <-> :class:`~hourllava_jax.model.projector.Projector`
parameter paths (design §1.2): ``nn.Sequential`` indices 0 and 2 are ``linear_0`` / ``linear_2``."""

from __future__ import annotations

from hourllava_jax.convert.mapping import TensorRule


def projector_hf_rules(prefix: str = "model.mm_projector.") -> list[TensorRule]:
    """Rules between ``{prefix}{0,2}.{weight,bias}`` and :class:`Projector` params."""
    rules = []
    for i in (0, 2):
        rules.append(TensorRule(f"{prefix}{i}.weight", (f"linear_{i}", "kernel"), (1, 0)))
        rules.append(TensorRule(f"{prefix}{i}.bias", (f"linear_{i}", "bias")))
    return rules


__all__ = ["projector_hf_rules"]
