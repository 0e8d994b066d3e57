"""Inference: generation with a KV cache, the answer-a-question pipeline, the per-video memory cache."""
