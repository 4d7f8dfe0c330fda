"""Preflight: find samples training cannot use (unreadable audio, empty transcripts, unknown
characters, CTC-infeasible lengths, over-long inputs) before the first step, name each one with its reason, and keep
the rest."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

from recog.datasets.manifest import Utterance
from recog.vocab import Vocab

EMPTY_TRANSCRIPT = "empty transcript"  # nothing (or only spaces) to learn or to score against


@dataclass
class Problem:
    key: str
    source: str
    reason: str


def ctc_frames_needed(label_ids: list[int]) -> int:
    """CTC needs one frame per label plus a blank between each pair of repeated labels."""
    repeats = sum(1 for a, b in zip(label_ids, label_ids[1:], strict=False) if a == b)
    return len(label_ids) + repeats


def preflight(
    utterances: list[Utterance],
    loaded,
    vocab: Vocab,
    modality,
    stack: int = 0,
    data=None,
) -> tuple[list[Utterance], list[Problem]]:
    """Keep the inputs training can use: loaded (`loaded`: a `recog.modalities.Loaded`), with a
    transcript, in the vocabulary, long enough for CTC after the model's frame stacking (`stack` 0:
    no such check, for evaluation) and (given the data config `data`) within its length limit."""
    kept, problems = [], []
    for utterance in utterances:
        reason = None
        unknown = vocab.unknown_chars(utterance.text)
        if utterance.key in loaded.errors:
            reason = f"{modality.unreadable}: {loaded.errors[utterance.key]}"
        elif not utterance.text.strip():
            reason = EMPTY_TRANSCRIPT
        elif unknown:
            reason = f"characters outside the vocabulary: {''.join(sorted(unknown))!r}"
        else:
            frames = loaded.frames[utterance.key]
            needed = ctc_frames_needed(vocab.encode(utterance.text))
            if stack and frames // stack < needed:
                reason = f"too short for its transcript: {frames // stack} output frames, CTC needs {needed}"
            elif data is not None:
                reason = modality.too_long(loaded.stored[utterance.key], frames, data)
        if reason:
            problems.append(Problem(utterance.key, utterance.source, reason))
        else:
            kept.append(utterance)
    return kept, problems


def write_report(problems: list[Problem], total: int, path: Path, name: str) -> dict:
    """Write the per-sample report and return a summary (counts by kind of reason)."""
    kinds = Counter(problem.reason.split(":")[0] for problem in problems)
    summary = {"set": name, "total": total, "skipped": len(problems), "by_reason": dict(kinds)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as stream:
        stream.write(json.dumps(summary) + "\n")
        for problem in problems:
            stream.write(json.dumps(asdict(problem)) + "\n")
    return summary
