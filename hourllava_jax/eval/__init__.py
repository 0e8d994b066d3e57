"""Evaluation: benchmark readers (``tasks/``), lmms-eval prompts, scoring and headline metrics,
sharded runner, reports, and the model answerer (the one module here that imports JAX)."""
