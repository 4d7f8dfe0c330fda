"""Where results go: the output JSONL as the ledger of finished files (append + flush, torn last line
cut off on restart), the merge of rank parts into one output, and atomic per-file .txt/.srt/.vtt.

Files are read line by line and a merge keeps only where each chosen line is, not the lines
themselves: memory stays flat however many files an output holds."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

from recog.decode.transcript import FileTranscript, to_srt, to_vtt


def write_atomic(path: Path, data: bytes, sync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "wb") as stream:
        stream.write(data)
        if sync:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(partial, path)


def iter_lines(path: Path) -> Iterator[tuple[int, bytes, dict | None]]:
    """(byte offset, raw line, record) for every line of a JSONL output; record is None for a line that
    is not a record (garbage, or a torn last line: one without its newline)."""
    if not path.exists():
        return
    offset = 0
    with open(path, "rb") as stream:
        for raw in stream:
            record = None
            if raw.endswith(b"\n"):
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    pass
                if not (isinstance(record, dict) and isinstance(record.get("path"), str)):
                    record = None
            yield offset, raw, record
            offset += len(raw)


def iter_records(path: Path) -> Iterator[dict]:
    """The valid records of a JSONL output, one at a time."""
    return (record for _, _, record in iter_lines(path) if record is not None)


def read_records(path: Path) -> tuple[list[tuple[dict, bytes]], bool]:
    """The complete, valid lines of a JSONL output as (record, raw line); and whether anything (a torn
    last line, a line that is not a record) was left out. Small outputs only: it holds them all."""
    records, repaired = [], False
    for _, raw, record in iter_lines(path):
        if record is not None:
            records.append((record, raw))
        else:
            repaired = repaired or bool(raw.strip()) or not raw.endswith(b"\n")
    return records, repaired


def _rewrite(path: Path, keep) -> None:
    """Rewrite `path` with the lines for which keep(record) is true, atomically and streamed."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "wb") as stream:
        for _, raw, record in iter_lines(path):
            if record is not None and keep(record):
                stream.write(raw)
        stream.flush()
        os.fsync(stream.fileno())
    os.replace(partial, path)


class Ledger:
    """The output JSONL as the record of finished files: one line per file, appended and flushed.
    `done` maps each finished path to (text, error); error is None for a success."""

    def __init__(self, path: Path, retry_failed: bool = False, also_done: list[Path] = ()):
        self.path = path
        self.done: dict[str, tuple[str | None, str | None]] = {}

        def keep(record: dict) -> bool:
            return not (retry_failed and record.get("error"))

        repaired = dropped = False
        for _, raw, record in iter_lines(path):
            if record is None:
                repaired = repaired or bool(raw.strip()) or not raw.endswith(b"\n")
            elif keep(record):
                self.done.setdefault(record["path"], (record.get("text"), record.get("error")))
            else:
                dropped = True
        if repaired or dropped:
            _rewrite(path, keep)
        for other in also_done:  # e.g. the merged output, read while this rank writes its part
            for record in iter_records(other):
                if keep(record):
                    self.done.setdefault(record["path"], (record.get("text"), record.get("error")))
        self.repaired = repaired
        self.stream = None  # opened at the first line: a run with nothing to do leaves no file

    def append(self, record: dict) -> None:
        if self.stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(self.path, "ab")
        self.stream.write((json.dumps(record) + "\n").encode())
        self.stream.flush()
        self.done[record["path"]] = (record["text"], record["error"])

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def merge(output: Path, parts: list[Path], order: list[str] | None = None) -> int:
    """One JSONL from `output` and part files: one line per path (a success wins over an error,
    otherwise the first seen), in `order` and then as found; written atomically, parts removed."""
    files = [output, *parts]
    chosen: dict[str, tuple[int, int, int, bool]] = {}  # path -> (file, offset, length, failed)
    original: list[str] = []  # the paths of `output` as they are: no rewrite when nothing changes
    for number, path in enumerate(files):
        for offset, raw, record in iter_lines(path):
            if record is None:
                continue
            if number == 0:
                original.append(record["path"])
            previous = chosen.get(record["path"])
            failed = bool(record.get("error"))
            if previous is None or (previous[3] and not failed):
                chosen[record["path"]] = (number, offset, len(raw), failed)
    rank = {path: number for number, path in enumerate(order or [])}
    paths = sorted(chosen, key=lambda path: rank.get(path, len(rank)))  # stable: the rest as found
    if parts or original != paths:
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        output.parent.mkdir(parents=True, exist_ok=True)
        streams = [open(path, "rb") if path.exists() else None for path in files]
        try:
            with open(partial, "wb") as stream:
                for path in paths:
                    number, offset, length, _ = chosen[path]
                    streams[number].seek(offset)
                    stream.write(streams[number].read(length))
                stream.flush()
                os.fsync(stream.fileno())
        finally:
            for source in streams:
                if source is not None:
                    source.close()
        os.replace(partial, output)
    for part in parts:
        part.unlink(missing_ok=True)
    return len(paths)


def part_path(output: Path, rank: int, world: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}of{world}")


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
