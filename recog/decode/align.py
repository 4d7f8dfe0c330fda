"""CTC forced alignment: where each character of a known text lies in a model's output frames.

`align` is the Viterbi search over CTC paths that spell the text (shared with `recog read`);
`force_align` is the whole step for speech: text -> labels, labels -> character spans, spans ->
character and word times with confidences. Between two characters the boundary is the middle of the
blank frames between them; the first character starts at its first frame and the last ends after its
last, so silence before and after the text belongs to no word.

Characters the vocabulary lacks are an error naming them (`AlignError`): a forced alignment must
place every character it reports. Callers that take text from people run `normalise_text` first,
which folds case, maps accents, dashes and curly quotes, and drops (and reports) the rest.
"""

from __future__ import annotations

import unicodedata

import numpy as np
import torch

MAX_CELLS = 100_000_000
"""Most frames x alignment states (2 per character + 1) one alignment may search: its back-pointers
take one byte each (100 MB). About five minutes of speech with its transcript; longer is refused
with a clear error (split the input)."""
DASHES = "-\u2010\u2011\u2012\u2013\u2014\u2015/"  # between words: a word boundary
APOSTROPHES = "\u2018\u2019\u02bc`\u00b4"  # curly and other apostrophes


class AlignError(ValueError):
    """A text that cannot be aligned to an input: characters the model cannot write, too few frames
    for the text, or too large a search; the message says which."""


# ---------------------------------------------------------------- the Viterbi search
def viterbi(log_probs: np.ndarray, labels: list[int]) -> tuple[list[tuple[int, int]], float] | None:
    """Per label, the first and last frame of the most probable CTC path that spells `labels`, and
    that path's log-probability; None when the frames are too few for the labels."""
    if not labels:
        return [], float(log_probs[:, 0].sum()) if len(log_probs) else 0.0
    if len(log_probs) == 0:
        return None
    states = np.zeros(2 * len(labels) + 1, dtype=np.int64)  # blank, l1, blank, l2, ..., blank
    states[1::2] = labels
    skip = np.zeros(len(states), dtype=bool)
    skip[3::2] = states[3::2] != states[1:-2:2]  # a label may follow the previous one without a blank
    score = np.full(len(states), -np.inf)
    score[:2] = log_probs[0, states[:2]]
    back = np.zeros(
        (len(log_probs), len(states)), dtype=np.int8
    )  # 0 stayed, 1 from the state before, 2 skipped
    columns = np.arange(len(states))
    one, two = np.full(len(states), -np.inf), np.full(len(states), -np.inf)
    for t in range(1, len(log_probs)):
        one[1:] = score[:-1]
        two[2:] = np.where(skip[2:], score[:-2], -np.inf)
        choices = np.stack([score, one, two])  # (3, states)
        back[t] = np.argmax(choices, axis=0)
        score = choices[back[t], columns] + log_probs[t, states]
    state = len(states) - 1 if len(states) == 1 or score[-1] >= score[-2] else len(states) - 2
    if not np.isfinite(score[state]):
        return None
    total = float(score[state])
    spans: list[list[int]] = [[-1, -1] for _ in labels]
    for t in range(len(log_probs) - 1, -1, -1):
        if state % 2:
            label = state // 2
            spans[label][0] = t
            if spans[label][1] < 0:
                spans[label][1] = t
        state -= int(back[t, state])
    return [(first, last) for first, last in spans], total


def align(log_probs: np.ndarray, labels: list[int]) -> list[tuple[int, int]] | None:
    """Per label, the first and last frame of the most probable CTC path (Viterbi) that spells
    `labels`; None when the frames are too few for the labels."""
    found = viterbi(log_probs, labels)
    return None if found is None else found[0]


def frames_needed(labels: list[int]) -> int:
    """The fewest frames a CTC path spelling `labels` can have: one per label, and a blank between
    two equal labels in a row."""
    return len(labels) + sum(1 for a, b in zip(labels, labels[1:], strict=False) if a == b)


def check_alignable(frames: int, labels: list[int], name: str) -> None:
    """AlignError (naming `name`) when `frames` output frames cannot hold `labels`, or when the search
    would pass MAX_CELLS; checked before the model runs where the frame count is known."""
    needed = frames_needed(labels)
    if frames < needed:
        raise AlignError(
            f"{name}: input too short for the text: {frames} model frames for {len(labels)} characters "
            f"(CTC needs at least {needed})"
        )
    cells = frames * (2 * len(labels) + 1)
    if cells > MAX_CELLS:
        raise AlignError(
            f"{name}: too long to align in one piece ({frames} frames x {2 * len(labels) + 1} states "
            f"> {MAX_CELLS:,}); split the input and its text"
        )


# ---------------------------------------------------------------- text
def normalise_text(text: str, vocab) -> tuple[str, str]:
    """`text` written with the vocabulary's characters, and the characters dropped (each once, in
    order). Case is folded and accents removed where the vocabulary lacks the original, curly
    apostrophes become "'", whitespace and dashes between words become one space."""
    known = set(vocab.chars)
    space = " " if " " in known else ""
    kept, dropped = [], {}
    for char in unicodedata.normalize("NFKC", text):
        for candidate in _spellings(char):
            if candidate in known:
                kept.append(candidate)
                break
        else:
            if char.isspace() or char in DASHES:
                kept.append(space)
            else:
                dropped.setdefault(char, None)
    return " ".join("".join(kept).split()) if space else "".join(kept), "".join(dropped)


def _spellings(char: str) -> list[str]:
    """`char`, then what it may become in a smaller vocabulary."""
    bare = "".join(c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c))
    found = [char, char.lower(), bare, bare.lower()]
    if char in APOSTROPHES:
        found.append("'")
    return [c for c in found if len(c) == 1]


def labels_for(text: str, vocab, name: str = "text") -> list[int]:
    """The label ids of `text`; AlignError naming the characters the vocabulary lacks."""
    unknown = vocab.unknown_chars(text)
    if unknown:
        listed = " ".join(repr(char) for char in sorted(unknown))
        raise AlignError(f"{name}: characters outside the model's vocabulary: {listed}")
    return vocab.encode(text)


# ---------------------------------------------------------------- spans -> positions
def boundaries(spans: list[tuple[int, int]]) -> list[float]:
    """len(spans) + 1 cuts in output frames: the first character's first frame, the middle of the
    blanks between each two characters, one past the last character's last frame."""
    if not spans:
        return []
    cuts = [float(spans[0][0])]
    cuts += [(last + 1 + following[0]) / 2 for (_, last), following in zip(spans, spans[1:], strict=False)]
    cuts.append(float(spans[-1][1] + 1))
    return cuts


def confidences(log_probs: np.ndarray, labels: list[int], spans: list[tuple[int, int]]) -> list[float]:
    """Per character, the model's highest probability for it over the frames the path gives it."""
    return [
        round(float(np.exp(log_probs[first : last + 1, label].max())), 4)
        for label, (first, last) in zip(labels, spans, strict=True)
    ]


def words_of(chars: list[dict]) -> list[dict]:
    """Words (split at spaces) from their first to their last character, with the mean confidence of
    their characters; characters without a position (start None) are left out of both."""
    words, current = [], []
    for char in [*chars, {"char": " "}]:
        if char["char"] != " ":
            current.append(char)
        elif current:
            placed = [c for c in current if c["start"] is not None]
            confidence = sum(c["confidence"] for c in placed) / len(placed) if placed else None
            words.append(
                {
                    "word": "".join(c["char"] for c in current),
                    "start": placed[0]["start"] if placed else None,
                    "end": placed[-1]["end"] if placed else None,
                    "confidence": None if confidence is None else round(confidence, 4),
                }
            )
            current = []
    return words


def force_align(
    log_probs: torch.Tensor | np.ndarray, text: str, vocab, frame_seconds: float, name: str = "input"
) -> dict:
    """Align `text` (vocabulary characters only) to one input's (time, vocab) log-probs: `chars` and
    `words` with start/end in seconds (output frame * `frame_seconds`) and confidence, and `log_prob`,
    the best path's log-probability per frame. AlignError naming `name` when it cannot be done."""
    scores = log_probs.numpy() if isinstance(log_probs, torch.Tensor) else np.asarray(log_probs)
    labels = labels_for(text, vocab, name)
    check_alignable(len(scores), labels, name)
    found = viterbi(scores, labels)
    if found is None:
        raise AlignError(f"{name}: no CTC path spells the text (the model gives it zero probability)")
    spans, total = found
    cuts = boundaries(spans)
    chars = [
        {
            "char": char,
            "start": round(cuts[index] * frame_seconds, 3),
            "end": round(cuts[index + 1] * frame_seconds, 3),
            "confidence": confidence,
        }
        for index, (char, confidence) in enumerate(zip(text, confidences(scores, labels, spans), strict=True))
    ]
    return {
        "text": text,
        "log_prob": round(total / max(len(scores), 1), 4),
        "chars": chars,
        "words": words_of(chars),
    }
