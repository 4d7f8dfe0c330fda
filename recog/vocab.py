"""Characters <-> ids. Id 0 is the CTC blank; the vocabulary travels inside every checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BLANK = "<blank>"
SPEECH_CHARS = " 'abcdefghijklmnopqrstuvwxyz"
# The handwriting corpora write the same normalised text (lower case, apostrophe) as speech.
TASK_CHARS = {"speech": SPEECH_CHARS, "ink": SPEECH_CHARS, "image": SPEECH_CHARS}


class Vocab:
    """A fixed character inventory; `encode` refuses characters it does not know."""

    def __init__(self, chars: Iterable[str]):
        chars = list(chars)
        if len(set(chars)) != len(chars):
            raise ValueError("vocabulary has duplicate characters")
        if BLANK in chars:
            raise ValueError(f"{BLANK!r} is reserved for the CTC blank")
        self.chars: list[str] = chars
        self.tokens: list[str] = [BLANK, *chars]
        self._index = {char: i + 1 for i, char in enumerate(chars)}

    @classmethod
    def speech(cls) -> Vocab:
        return cls(SPEECH_CHARS)

    @classmethod
    def for_task(cls, task: str) -> Vocab:
        if task not in TASK_CHARS:
            raise ValueError(f"no vocabulary for task {task!r}: expected one of {', '.join(TASK_CHARS)}")
        return cls(TASK_CHARS[task])

    def __len__(self) -> int:
        return len(self.tokens)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and other.chars == self.chars

    def unknown_chars(self, text: str) -> set[str]:
        return {char for char in text if char not in self._index}

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown_chars(text)
        if unknown:
            raise ValueError(f"characters outside the vocabulary: {''.join(sorted(unknown))!r}")
        return [self._index[char] for char in text]

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.tokens[i] for i in ids if i != 0)

    @property
    def word_separator(self) -> str | None:
        return " " if " " in self._index else None

    def to_list(self) -> list[str]:
        return list(self.chars)
