"""Word and character error rates (Levenshtein distance over references)."""

from __future__ import annotations

from collections.abc import Sequence


def edit_distance(reference: Sequence, hypothesis: Sequence) -> int:
    """Minimum number of substitutions, insertions and deletions turning hypothesis into reference."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_item in enumerate(reference, start=1):
        current = [i] + [0] * len(hypothesis)
        for j, hyp_item in enumerate(hypothesis, start=1):
            current[j] = min(
                previous[j] + 1,
                current[j - 1] + 1,
                previous[j - 1] + (ref_item != hyp_item),
            )
        previous = current
    return previous[-1]


class ErrorRate:
    """Accumulates errors and reference lengths for corpus-level WER and CER."""

    def __init__(self) -> None:
        self.word_errors = self.words = self.char_errors = self.chars = self.utterances = 0

    def add(self, reference: str, hypothesis: str) -> None:
        ref_words, hyp_words = reference.split(), hypothesis.split()
        self.word_errors += edit_distance(ref_words, hyp_words)
        self.words += len(ref_words)
        ref_chars, hyp_chars = " ".join(ref_words), " ".join(hyp_words)
        self.char_errors += edit_distance(ref_chars, hyp_chars)
        self.chars += len(ref_chars)
        self.utterances += 1

    @property
    def wer(self) -> float:
        return self.word_errors / max(self.words, 1)

    @property
    def cer(self) -> float:
        return self.char_errors / max(self.chars, 1)

    def as_dict(self) -> dict:
        return {"wer": self.wer, "cer": self.cer, "utterances": self.utterances, "words": self.words}


def wer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    rate = ErrorRate()
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        rate.add(reference, hypothesis)
    return rate.wer


def cer(references: Sequence[str], hypotheses: Sequence[str]) -> float:
    rate = ErrorRate()
    for reference, hypothesis in zip(references, hypotheses, strict=True):
        rate.add(reference, hypothesis)
    return rate.cer
