"""Preflight: find samples training cannot use (unreadable audio, empty transcripts, unknown
characters, CTC-infeasible lengths) before the first step, name each one with its reason, and keep
the rest."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

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
    audio: dict[str, np.ndarray],
    load_errors: dict[str, str],
    vocab: Vocab,
    output_frames,  # callable: number of samples -> model output frames
    max_duration: float = 0.0,
    sample_rate: int = 16000,
) -> tuple[list[Utterance], list[Problem]]:
    kept, problems = [], []
    for utterance in utterances:
        reason = None
        unknown = vocab.unknown_chars(utterance.text)
        if utterance.key in load_errors:
            reason = f"unreadable audio: {load_errors[utterance.key]}"
        elif not utterance.text.strip():
            reason = EMPTY_TRANSCRIPT
        elif unknown:
            reason = f"characters outside the vocabulary: {''.join(sorted(unknown))!r}"
        else:
            samples = audio[utterance.key].shape[0]
            available = output_frames(samples)
            needed = ctc_frames_needed(vocab.encode(utterance.text))
            if available < needed:
                reason = f"too short for its transcript: {available} output frames, CTC needs {needed}"
            elif max_duration and samples / sample_rate > max_duration:
                reason = f"longer than data.max_duration ({samples / sample_rate:.1f} s > {max_duration} s)"
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
