"""Characters <-> ids. Id 0 is the CTC blank; the vocabulary travels inside every checkpoint."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

BLANK = "<blank>"
# What the built-in corpora write, speech and handwriting alike (lower case, apostrophe, space); a model
# trained on other text carries its own vocabulary in its checkpoint.
DEFAULT_CHARS = " 'abcdefghijklmnopqrstuvwxyz"
SPEECH_CHARS = DEFAULT_CHARS  # the name before other vocabularies


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
    def default(cls) -> Vocab:
        """The built-in corpora's characters, for every modality."""
        return cls(DEFAULT_CHARS)

    speech = default  # the name before handwriting shared it

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
