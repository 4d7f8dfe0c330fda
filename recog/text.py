"""Transcript normalisation: what a model learns to write. The same rules apply to training and dev
transcripts, to the LM text, and to the references a model is scored against; they travel inside the
checkpoint (`"text"`), so `recog eval` scores a model on the text it was trained to write.

A checkpoint without the entry (older ones) keeps transcripts as they are, which is what they did."""

from __future__ import annotations

import unicodedata
from dataclasses import asdict, dataclass

UNICODE_FORMS = ("NFC", "NFKC", "none")
CASES = ("keep", "lower", "upper")
KEEP_OR_DROP = ("keep", "drop")
VOCABS = ("default", "corpus")
# Kept by punctuation: drop: inside words they are letters of the word (don't, mother-in-law).
WORD_INNER = "'-"
QUOTES = {"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u201c": '"', "\u201d": '"'}


@dataclass(frozen=True)
class TextConfig:
    """Config section `text`. unicode: NFC (default), NFKC (also folds compatibility forms: ligatures,
    full-width letters) or none; case: keep, lower or upper; punctuation and digits: keep or drop.
    Curly quotes become straight ones and runs of white space one space, always. vocab: the
    characters the model writes: "default" (the built-in corpora's `a-z ' space`) or "corpus" (every
    character of the normalised training transcripts)."""

    unicode: str = "NFC"
    case: str = "keep"
    punctuation: str = "keep"
    digits: str = "keep"
    vocab: str = "default"

    def __call__(self, text: str) -> str:
        if self.unicode != "none":
            text = unicodedata.normalize(self.unicode, text)
        text = "".join(QUOTES.get(char, char) for char in text)
        if self.case == "lower":
            text = text.lower()
        elif self.case == "upper":
            text = text.upper()
        if self.punctuation == "drop" or self.digits == "drop":
            text = "".join(self._fold(text, i) for i in range(len(text)))
        return " ".join(text.split())

    def _fold(self, text: str, index: int) -> str:
        char = text[index]
        category = unicodedata.category(char)
        if self.digits == "drop" and category == "Nd":
            return ""
        if self.punctuation == "drop" and (category[0] == "P" or category[0] == "S"):
            inside = 0 < index < len(text) - 1 and text[index - 1].isalnum() and text[index + 1].isalnum()
            if char in WORD_INNER and inside:
                return char
            return " " if category in ("Pd", "Pc") else ""
        return char

    def state(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state(cls, state: dict | None) -> TextConfig | None:
        """The rules a checkpoint stores; None for a checkpoint from before them (text kept as is)."""
        if not state:
            return None
        known = {name: value for name, value in state.items() if name in cls.__dataclass_fields__}
        return cls(**known)


def corpus_chars(texts) -> list[str]:
    """The characters of `texts` (already normalised), space first, then in code point order."""
    chars = {char for text in texts for char in text}
    chars.add(" ")
    return [" ", *sorted(chars - {" "})]
