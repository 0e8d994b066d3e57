"""The memory stage (design §1.2, §1.4): host plan (layout), in-graph gather, and the single-sample reference."""
