"""The memory stage (SPEC §1.2–1.6): host plan (layout), in-graph gather, and the single-sample reference."""
