"""Conversation text -> token ids and labels (design §4.4): time instruction, ChatML, labelling rule.

Follows the release (`hourllava` dataset + LLaVA-NeXT `preprocess_multimodal` / `preprocess_qwen`):

1. Time instruction (videos): the first human turn becomes
   `"<image>\\n" + TIME_INSTRUCTION + "\\n" + turn.replace("<image>", "")`. Like the release we
   only delete the placeholder, so "<image>\\nQ" becomes "...video.\\n\\nQ" (a double newline).
2. A turn holding exactly one `<image>` not at its start gets it moved to the front
   (`"<image>\\n" + rest.strip()`), and the LLaVA-Video noise tag "QA_GT_caption_based_noisy" is
   deleted, as `preprocess_multimodal` does.
3. ChatML "qwen_1_5": `<|im_start|>{role}\\n{content}<|im_end|>\\n` per turn after a system turn
   with "You are a helpful assistant.". Each turn is tokenized as one string, split at every
   `<image>` whose place gets `image_token_id` (LLaVA's `tokenizer_image_token`; -200 default).
4. Labels: system and user tokens -100 except `\\n`, `<|im_start|>`, `<|im_end|>` which keep
   their ids; assistant turns (header and trailing `<|im_end|>\\n` included) keep every id;
   placeholders -100.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from hourllava_jax.data import errors
from hourllava_jax.data.errors import DataError
from hourllava_jax.config.tokens import IGNORE_INDEX, IMAGE_TOKEN_ID
from hourllava_jax.data.records import IMAGE_TOKEN, Record, Turn
from hourllava_jax.data.tokenizer import IM_END, IM_START, chat_token_ids

SYSTEM_PROMPT = "You are a helpful assistant."
ROLES = {"human": "user", "gpt": "assistant"}
TIME_INSTRUCTION = (
    "The video lasts for {seconds:.2f} seconds, and {n} frames are uniformly sampled from it. "
    "Please answer the following questions related to this video."
)
_NOISE_TAG = "QA_GT_caption_based_noisy"  # stray tag in LLaVA-Video-178K, deleted by the release


@dataclasses.dataclass(frozen=True)
class TokenizedConversation:
    """One tokenized sample (unpadded, untruncated).

    input_ids: int32[L], with `image_token_id` at each placeholder.
    labels: int32[L], -100 where no loss is taken.
    image_positions: int32[n_images], index in `input_ids` of each placeholder, in order.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    image_positions: np.ndarray

    @property
    def n_images(self) -> int:
        return int(self.image_positions.shape[0])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])


def time_instruction(seconds: float, n_frames: int) -> str:
    """The design §4.3 sentence; `n_frames` is the sampled count before repetition to 128."""
    return TIME_INSTRUCTION.format(seconds=seconds, n=n_frames)


def add_time_instruction(turns: Sequence[Turn], seconds: float, n_frames: int) -> tuple[Turn, ...]:
    """Prepends `<image>\\n{time instruction}\\n` to the first (human) turn, deleting its `<image>`."""
    if not turns or turns[0].role != "human":
        raise ValueError("the conversation must start with a human turn")
    first = f"{IMAGE_TOKEN}\n{time_instruction(seconds, n_frames)}\n{turns[0].value.replace(IMAGE_TOKEN, '')}"
    return (Turn("human", first), *turns[1:])


def normalize_placeholders(turns: Sequence[Turn]) -> tuple[Turn, ...]:
    """LLaVA-NeXT `preprocess_multimodal`: a lone `<image>` not at the start moves to the front."""
    out = []
    for t in turns:
        v = t.value
        if v.count(IMAGE_TOKEN) == 1 and not v.startswith(IMAGE_TOKEN):
            v = f"{IMAGE_TOKEN}\n{v.replace(IMAGE_TOKEN, '').strip()}".strip()
        out.append(Turn(t.role, v.replace(_NOISE_TAG, "")))
    return tuple(out)


def prepare_turns(
    record: Record, seconds: float | None = None, n_frames: int | None = None
) -> tuple[Turn, ...]:
    """The text the model sees for `record`: time instruction (videos, when `seconds` and
    `n_frames` are given, as in the release's `add_time_instruction=True`), then placeholders."""
    turns = record.conversations
    if record.video is not None and seconds is not None and n_frames is not None:
        turns = add_time_instruction(turns, seconds, n_frames)
    return normalize_placeholders(turns)


def render_chatml(turns: Sequence[Turn], system_prompt: str = SYSTEM_PROMPT) -> list[tuple[str, str]]:
    """ChatML pieces as (role, text): system first, then one per turn, each ending in `<|im_end|>\\n`."""
    pieces = [("system", f"{IM_START}system\n{system_prompt}{IM_END}\n")]
    for t in turns:
        role = ROLES[t.role]
        pieces.append((role, f"{IM_START}{role}\n{t.value}{IM_END}\n"))
    return pieces


def tokenize_turns(
    turns: Sequence[Turn],
    tokenizer,
    image_token_id: int = IMAGE_TOKEN_ID,
    system_prompt: str = SYSTEM_PROMPT,
    where: str = "",
) -> TokenizedConversation:
    """Tokenizes ChatML-rendered `turns` and labels them (design §4.4 rule, see module docstring).

    Args:
      turns: human/gpt turns (already through `prepare_turns`).
      tokenizer: a HF fast tokenizer with `<|im_start|>`, `<|im_end|>`, `<|endoftext|>` and a
        single-token "\\n" (`tokenizer.load_tokenizer` / `build_tokenizer`).
      image_token_id: id put at each `<image>` (must not be a vocabulary id; -200 by default).
      where: the record's origin, for error messages.
    Returns:
      TokenizedConversation with int32 `input_ids` / `labels` of equal length.
    """
    ids_of = chat_token_ids(tokenizer)
    keep = ids_of.keep_label
    if 0 <= image_token_id < len(tokenizer):
        raise ValueError(f"image_token_id {image_token_id} collides with a vocabulary id")
    input_ids: list[int] = []
    labels: list[int] = []
    image_positions: list[int] = []
    for role, text in render_chatml(turns, system_prompt):
        if role == "assistant" and IMAGE_TOKEN in text:
            raise DataError(where, errors.BAD_CONVERSATION, f"{IMAGE_TOKEN} in an assistant turn")
        for k, segment in enumerate(text.split(IMAGE_TOKEN)):
            if k:  # a placeholder preceded this segment
                image_positions.append(len(input_ids))
                input_ids.append(image_token_id)
                labels.append(IGNORE_INDEX)
            if not segment:
                continue
            seg_ids = tokenizer.encode(segment, add_special_tokens=False)
            input_ids.extend(seg_ids)
            if role == "assistant":
                labels.extend(seg_ids)
            else:
                labels.extend(i if i in keep else IGNORE_INDEX for i in seg_ids)
    return TokenizedConversation(
        input_ids=np.asarray(input_ids, np.int32),
        labels=np.asarray(labels, np.int32),
        image_positions=np.asarray(image_positions, np.int32),
    )


def tokenize_record(
    record: Record,
    tokenizer,
    *,
    seconds: float | None = None,
    n_frames: int | None = None,
    image_token_id: int = IMAGE_TOKEN_ID,
    system_prompt: str = SYSTEM_PROMPT,
) -> TokenizedConversation:
    """`prepare_turns` + `tokenize_turns`, checking the placeholder count against the record."""
    turns = prepare_turns(record, seconds, n_frames)
    out = tokenize_turns(turns, tokenizer, image_token_id, system_prompt, record.origin)
    if out.n_images != record.num_visuals:
        raise DataError(
            record.origin,
            errors.IMAGE_COUNT_MISMATCH,
            f"{out.n_images} placeholders after templating, {record.num_visuals} visual inputs",
        )
    return out


def generation_prompt(
    turns: Sequence[Turn],
    tokenizer,
    image_token_id: int = IMAGE_TOKEN_ID,
    system_prompt: str = SYSTEM_PROMPT,
) -> np.ndarray:
    """int32[L] prompt for answering: the conversation so far (ending with a human turn) plus the
    assistant header `<|im_start|>assistant\\n`, as LLaVA's `conv.get_prompt()` at inference."""
    if not turns or turns[-1].role != "human":
        raise ValueError("a generation prompt must end with a human turn")
    tok = tokenize_turns(turns, tokenizer, image_token_id, system_prompt)
    header = tokenizer.encode(f"{IM_START}assistant\n", add_special_tokens=False)
    return np.concatenate([tok.input_ids, np.asarray(header, np.int32)])


def kept_prefix_length(sample: TokenizedConversation) -> int:
    """n0 of design §2.4: tokens before the first placeholder whose label is -100 (8 with Qwen2
    and the default system prompt). Every decayed token sits n0 positions after its memory id."""
    if sample.n_images == 0:
        raise ValueError("no placeholder in this sample")
    first = int(sample.image_positions[0])
    return int(np.sum(sample.labels[:first] == IGNORE_INDEX))
