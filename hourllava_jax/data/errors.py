"""The one exception type of the data pipeline, with machine-readable reason codes.

Every reader (records, chat, video decoding, features) raises `DataError` for bad *input*
(never for bugs), so a training loop can `except DataError as e: skipped[e.reason] += 1`
and keep going, while the message still names the file and the problem.
"""

from __future__ import annotations

from pathlib import Path

# Reason codes (stable strings: they end up in metrics and logs).
MISSING_FILE = "missing_file"
CORRUPT_VIDEO = "corrupt_video"
NO_FRAMES = "no_frames"
UNSUPPORTED_CODEC = "unsupported_codec"
NOT_A_VIDEO = "not_a_video"
PATH_ESCAPES_ROOT = "path_escapes_root"
MALFORMED_JSON = "malformed_json"
BAD_RECORD = "bad_record"
BAD_CONVERSATION = "bad_conversation"
MISSING_IMAGE_TOKEN = "missing_image_token"
IMAGE_COUNT_MISMATCH = "image_count_mismatch"
DECODE_TIMEOUT = "decode_timeout"
TOO_LONG = "too_long"
CORRUPT_FEATURES = "corrupt_features"
UNSUPPORTED_RECORD_KIND = "unsupported_record_kind"
CORRUPT_IMAGE = "corrupt_image"

REASONS = frozenset(
    {
        MISSING_FILE,
        CORRUPT_VIDEO,
        NO_FRAMES,
        UNSUPPORTED_CODEC,
        NOT_A_VIDEO,
        PATH_ESCAPES_ROOT,
        MALFORMED_JSON,
        BAD_RECORD,
        BAD_CONVERSATION,
        MISSING_IMAGE_TOKEN,
        IMAGE_COUNT_MISMATCH,
        DECODE_TIMEOUT,
        TOO_LONG,
        CORRUPT_FEATURES,
        UNSUPPORTED_RECORD_KIND,
        CORRUPT_IMAGE,
    }
)


class DataError(ValueError):
    """Bad input data: `str(e) == f"{path}: {reason}: {detail}"`.

    Attributes:
      path: the offending file (for a JSON Lines record, "file:line"), as given.
      reason: one of the reason constants of this module (used to count skips).
      detail: human-readable explanation.
    """

    def __init__(self, path: str | Path, reason: str, detail: str):
        self.path = str(path)
        self.reason = reason
        self.detail = detail
        super().__init__(f"{self.path}: {reason}: {detail}")

    def __reduce__(self):  # a custom __init__ breaks the default copy/transport across worker processes
        return (type(self), (self.path, self.reason, self.detail))
