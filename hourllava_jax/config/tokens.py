"""The two special ids every layer agrees on (LLaVA's conventions, design §4 and design §2.4)."""

IGNORE_INDEX = -100  # a label that takes no loss (prompts, placeholders, padding)
IMAGE_TOKEN_ID = -200  # the id put at each ``<image>`` placeholder; never a vocabulary id

__all__ = ["IGNORE_INDEX", "IMAGE_TOKEN_ID"]
