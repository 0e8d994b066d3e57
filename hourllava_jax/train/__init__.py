"""Training: config, optimizer (per-module rates, freezing), state, step, checkpoints, loop, metrics."""
