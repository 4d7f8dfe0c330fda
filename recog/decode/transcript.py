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
    # the beam search's n best texts with their scores, best first, when more than one was asked for
    alternatives: list[dict] = field(default_factory=list)

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


@dataclass
class FileTranscript(Transcript):
    """A transcript of one input file, or the reason there is none (`error`)."""

    path: str = ""
    duration: float | None = None  # seconds
    error: str | None = None

    def record(self) -> dict:
        """The JSONL line: path, text, duration, words, error (null on success)."""
        return {
            "path": self.path,
            "text": None if self.error else self.text,
            "duration": self.duration,
            "words": [asdict(word) for word in self.words],
            **({"nbest": self.alternatives} if self.alternatives else {}),
            "error": self.error,
        }

    @classmethod
    def from_record(cls, record: dict) -> FileTranscript:
        return cls(
            record.get("text") or "",
            words=[Word(**word) for word in record.get("words") or []],
            path=record["path"],
            duration=record.get("duration"),
            error=record.get("error"),
            alternatives=record.get("nbest") or [],
        )


def stitch(pieces: list[tuple[Transcript, float, float, float]]) -> Transcript:
    """Join the transcripts of consecutive chunks of one recording into one.

    Each piece is (transcript, offset, keep_start, keep_end): word times in the transcript count from
    `offset` seconds into the recording; a word belongs to the chunk whose [keep_start, keep_end)
    holds its midpoint, so words heard twice in an overlap are kept once."""
    words, score = [], 0.0
    for transcript, offset, keep_start, keep_end in pieces:
        score += transcript.score
        for word in transcript.words:
            start, end = round(word.start + offset, 3), round(word.end + offset, 3)
            if keep_start <= (start + end) / 2 < keep_end:
                words.append(Word(word.word, start, end, word.confidence))
    return Transcript(" ".join(word.word for word in words), score, words)


def cues(
    words: list[Word], max_seconds: float = 6.0, max_chars: int = 84, max_gap: float = 1.0
) -> list[tuple[float, float, str]]:
    """Subtitle cues (start, end, text): a new cue after a pause, or when one grows too long."""
    groups: list[list[Word]] = []
    for word in words:
        current = groups[-1] if groups else None
        if (
            current is None
            or word.start - current[-1].end > max_gap
            or word.end - current[0].start > max_seconds
            or len(" ".join(w.word for w in current)) + 1 + len(word.word) > max_chars
        ):
            groups.append([word])
        else:
            current.append(word)
    return [(group[0].start, group[-1].end, " ".join(w.word for w in group)) for group in groups]


def timestamp(seconds: float, separator: str = ",") -> str:
    """hh:mm:ss,mmm (SRT) or hh:mm:ss.mmm (WebVTT)."""
    millis = max(0, int(round(seconds * 1000)))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def _subtitle_cues(transcript: Transcript, duration: float | None) -> list[tuple[float, float, str]]:
    if transcript.words:
        return cues(transcript.words)
    return [(0.0, duration or 0.0, transcript.text)] if transcript.text else []


def to_srt(transcript: Transcript, duration: float | None = None) -> str:
    blocks = [
        f"{number}\n{timestamp(start)} --> {timestamp(end)}\n{text}\n"
        for number, (start, end, text) in enumerate(_subtitle_cues(transcript, duration), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(transcript: Transcript, duration: float | None = None) -> str:
    blocks = [
        f"{timestamp(start, '.')} --> {timestamp(end, '.')}\n{text}\n"
        for start, end, text in _subtitle_cues(transcript, duration)
    ]
    return "\n".join(["WEBVTT\n", *blocks])
