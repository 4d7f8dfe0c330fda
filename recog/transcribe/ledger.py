"""Per-file .txt/.srt/.vtt outputs of a transcription; the JSONL ledger itself lives in `recog.jobs`
(re-exported here for the callers that import it from `recog.transcribe`)."""

from __future__ import annotations

from pathlib import Path

from recog.decode.transcript import FileTranscript, to_srt, to_vtt
from recog.jobs import Ledger, iter_records, merge, part_path, read_records, write_atomic

__all__ = ["Ledger", "iter_records", "merge", "part_path", "read_records", "write_atomic", "write_outputs"]


def write_outputs(transcript: FileTranscript, name: str, formats: tuple[str, ...], out_dir: Path) -> None:
    """Per-file .txt / .srt / .vtt, each written to a temporary file and renamed into place."""
    for kind in formats:
        if kind == "txt":
            text = transcript.text + "\n"
        elif kind == "srt":
            text = to_srt(transcript, transcript.duration)
        else:
            text = to_vtt(transcript, transcript.duration)
        write_atomic(out_dir / f"{name}.{kind}", text.encode())
