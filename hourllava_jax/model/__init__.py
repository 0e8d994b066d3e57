"""Flax NNX modules: SigLIP, projector, memory repository and forgetting, MemAug, Qwen2, Hour-LLaVA."""
