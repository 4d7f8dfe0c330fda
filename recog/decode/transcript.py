"""Plain results: text, score, and words with start/end time and confidence."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch


@dataclass
class Word:
    word: str
    start: float  # seconds
    end: float
    confidence: float


@dataclass
class Transcript:
    text: str
    score: float = 0.0
    words: list[Word] = field(default_factory=list)

    def as_dict(self) -> dict:
        return asdict(self)


def words_from_emissions(
    emissions: list[tuple[str, int]], log_probs: torch.Tensor, token_ids: list[int], frame_seconds: float
) -> list[Word]:
    """Group emitted characters (char, frame) into words split on spaces.

    A word spans from its first character's frame to one frame after its last; its confidence is
    the mean posterior of its characters at the frames that emitted them."""
    words, chars, frames, probs = [], [], [], []

    def flush() -> None:
        if chars:
            words.append(
                Word(
                    "".join(chars),
                    round(frames[0] * frame_seconds, 3),
                    round((frames[-1] + 1) * frame_seconds, 3),
                    round(sum(probs) / len(probs), 4),
                )
            )
            chars.clear(), frames.clear(), probs.clear()

    for (char, frame), token in zip(emissions, token_ids, strict=True):
        if char == " ":
            flush()
            continue
        chars.append(char)
        frames.append(frame)
        probs.append(float(log_probs[frame, token].exp()))
    flush()
    return words
