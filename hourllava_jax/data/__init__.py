"""Data: records and chat template, tokenizer, video decoding, features, TFDS builder, grain pipelines, synthetic data."""
