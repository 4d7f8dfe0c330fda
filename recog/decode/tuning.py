"""Choosing decoder settings on a dev set: `tune` searches the LM weight, the word insertion score and
the unknown-word score by WER (then CER) for `recog train`, `recog lm tune` and `Recognizer.tune_beam`;
`grid_search` is the loop under it, also used by benchmarks/decoder.py to choose the pruning."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from recog.metrics import ErrorRate

if TYPE_CHECKING:
    from recog.decode.ctc import CTCBeamDecoder

WEIGHTS = ("lm_weight", "word_score", "unk_score")
MAX_GRID_POINTS = 10_000  # each point decodes the whole dev set once


def grid_search(
    evaluate: Callable[[dict[str, Any]], Mapping[str, Any]], axes: Mapping[str, Iterable]
) -> list[dict]:
    """`evaluate(point)` at every point of the product of `axes` (name -> values; the last varies
    fastest): one row per point, its values followed by what `evaluate` returned."""
    values = {name: list(choices) for name, choices in axes.items()}
    empty = [name for name, choices in values.items() if not choices]
    if empty:
        raise ValueError(f"nothing to search: no values for {', '.join(empty)}")
    points = 1
    for choices in values.values():
        points *= len(choices)
    if points > MAX_GRID_POINTS:
        raise ValueError(f"a grid of {points} points is more than {MAX_GRID_POINTS}: give fewer values")
    rows = []
    for chosen in itertools.product(*values.values()):
        point = dict(zip(values, chosen, strict=True))
        rows.append({**point, **evaluate(point)})
    return rows


def error_rates(decoder: CTCBeamDecoder, log_probs: Sequence, references: Sequence[str]) -> dict[str, float]:
    """WER and CER of the decoder on (time, vocab) log-probs against their reference texts."""
    rate = ErrorRate()
    for reference, transcript in zip(references, decoder(list(log_probs)), strict=True):
        rate.add(reference, transcript.text)
    return {"wer": rate.wer, "cer": rate.cer}


def tune(
    decoder: CTCBeamDecoder,
    log_probs: Sequence,
    references: Sequence[str],
    lm_weights: Iterable[float],
    word_scores: Iterable[float],
    unk_scores: Iterable[float] | None = None,
) -> dict:
    """The LM weight x word score x unknown-word score (none given: the decoder's own) with the lowest
    WER, then CER, on a dev set; the decoder is left at the best. Returns {"best": row, "grid": rows},
    a row being the three weights with "wer" and "cer"."""
    if len(log_probs) != len(references):
        raise ValueError(f"{len(log_probs)} log-probs but {len(references)} reference texts")
    unk_scores = list(unk_scores or ()) or [decoder.unk_score]

    def evaluate(point: dict[str, Any]) -> dict[str, float]:
        decoder.configure(**point)
        return error_rates(decoder, log_probs, references)

    axes = {"lm_weight": lm_weights, "word_score": word_scores, "unk_score": unk_scores}
    grid = grid_search(evaluate, axes)
    best = min(grid, key=lambda row: (row["wer"], row["cer"]))
    decoder.configure(**{name: best[name] for name in WEIGHTS})
    return {"best": best, "grid": grid}
