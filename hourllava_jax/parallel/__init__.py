"""Device meshes, the logical-axis vocabulary and sharding helpers."""
