"""The output JSONL as the ledger of finished files, and the rules that keep it safe.

Every line is one finished input: a JSON object with `path`, `text`, `error` and `model`, the model
that wrote it as "TASK:SHA" (the task and the first 16 hex digits of the checkpoint's sha256). A
file is a ledger when it is empty or every complete line is such a record; a torn last line (an
interrupted append, so it starts as our lines do) is cut off. Anything else, a line that is not ours,
or records of another model, is refused with `JobError` and the file is not touched. Lines of older
recog versions (records without `model`) are accepted as lines of an unknown model, with a warning.

Files are read line by line (a line may be at most `MAX_LINE` bytes) and a merge keeps only where
each chosen line is: memory stays flat however many files an output holds."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

MAX_LINE = 64 << 20  # no record comes near this; a file with a longer line is not a ledger
RECORD_START = b'{"path": '  # how json.dumps begins every record: what a torn last line starts with


class JobError(Exception):
    """A problem with the job as a whole (an option, the output, the model), not with one input; the
    command line prints it as one line and exits 2."""


def is_record(value: object) -> bool:
    return (
        isinstance(value, dict)
        and isinstance(value.get("path"), str)
        and "error" in value
        and "text" in value
    )


class Scan:
    """One pass over a ledger: the records as (offset, raw line, record), checked as they come; a
    line that is not ours raises JobError. `torn` is the byte offset of a torn last line, if any."""

    def __init__(self, path: Path, model: str | None, label: str | None = None):
        self.path, self.model, self.label = path, model, label
        self.torn: int | None = None
        self.legacy = False  # lines without `model`: written by a recog before model ids

    def __iter__(self) -> Iterator[tuple[int, bytes, dict]]:
        offset, number = 0, 0
        with open(self.path, "rb") as stream:
            while raw := stream.readline(MAX_LINE):
                number += 1
                if not raw.endswith(b"\n"):
                    if len(raw) < MAX_LINE and raw.startswith(RECORD_START[: len(raw)]):
                        self.torn = offset  # an append cut short: the last line, starting as ours do
                        return
                    raise self.foreign(number, "not a complete line of JSON")
                try:
                    record = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise self.foreign(number, "not JSON") from None
                if not is_record(record):
                    raise self.foreign(number, "not a record with path, text and error")
                self.check_model(record, number)
                yield offset, raw, record
                offset += len(raw)

    def foreign(self, number: int, why: str) -> JobError:
        return JobError(
            f"{self.path}: not a recog output (line {number}: {why}); left as it is: choose another "
            f"output file, or move this one away"
        )

    def check_model(self, record: dict, number: int) -> None:
        found = record.get("model")
        if found is None:
            self.legacy = True
        elif self.model is None:
            self.model = found  # the first model seen: every other line must agree
        elif found != self.model:
            expected = f"{self.model} ({self.label})" if self.label else self.model
            raise JobError(
                f"{self.path}: line {number} was written by another model ({found}), not by {expected}; "
                "left as it is: resume with that model, or write to another output file"
            )


def check_output_path(path: str | Path, option: str = "-o") -> Path:
    """An output must be a regular file or a new one in a folder: a device is never read, a folder
    or a path under a file is named as such."""
    from recog.jobs.discovery import kind_of

    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except NotADirectoryError:
        parent = next(p for p in path.parents if p.exists())
        raise JobError(f"{option} {path}: {parent} is a file, not a folder") from None
    except FileNotFoundError:
        parent = next((p for p in path.parents if p.exists()), None)
        if parent is not None and not parent.is_dir():
            raise JobError(f"{option} {path}: {parent} is a file, not a folder") from None
        return path
    except OSError as error:
        raise JobError(f"{option} {path}: {error.strerror}") from None
    if os.path.isdir(path):
        raise JobError(f"{option} {path}: is a folder; {option} names the JSONL file to write")
    if not os.path.isfile(path):
        raise JobError(
            f"{path}: not a regular file ({kind_of(mode)}); {option} must be a regular file or a new one"
        )
    return path


def scan_ledger(path: Path, model: str | None) -> Scan:
    """Check a whole existing ledger (raises JobError if it is not one, or of another model)."""
    scan = Scan(path, model)
    for _ in scan:
        pass
    return scan


def warn_legacy(path: Path) -> None:
    print(
        f"recog: {path}: lines without a model id (an older recog wrote them): resuming on the "
        "assumption that they are this model's",
        file=sys.stderr,
    )


class Ledger:
    """The output JSONL as the record of finished files: one line per file, appended and flushed.
    `done` maps each finished path to (text, error); error is None for a success. Opening it checks
    the file (JobError: not a ledger, or another model's), cuts a torn last line off (`repaired`)
    and with `retry_failed` drops the lines that have an error."""

    def __init__(
        self,
        path: Path,
        model: str | None = None,
        retry_failed: bool = False,
        also_done: list[Path] = (),
        label: str | None = None,
    ):
        self.path, self.model = Path(path), model
        self.done: dict[str, tuple[str | None, str | None]] = {}
        self.repaired = self.dropped = False
        if self.path.exists():
            scan = Scan(self.path, model, label)
            for _, _, record in scan:
                if retry_failed and record.get("error"):
                    self.dropped = True
                else:
                    self.done.setdefault(record["path"], (record.get("text"), record.get("error")))
            if scan.legacy:
                warn_legacy(self.path)
            self.repaired = scan.torn is not None
            if self.dropped:
                rewrite(self.path, lambda record: not record.get("error"), model)
            elif self.repaired:
                os.truncate(self.path, scan.torn)
        for other in also_done:  # e.g. the merged output, read while this rank writes its part
            if other.exists():
                for _, _, record in Scan(other, model, label):
                    if not (retry_failed and record.get("error")):
                        self.done.setdefault(record["path"], (record.get("text"), record.get("error")))
        self.stream = None  # opened at the first line: a run with nothing to do leaves no file

    def append(self, record: dict) -> None:
        if self.model is not None:
            record = {**record, "model": self.model}
        try:
            if self.stream is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self.stream = open(self.path, "ab")  # noqa: SIM115
            self.stream.write((json.dumps(record) + "\n").encode())
            self.stream.flush()
        except OSError as error:
            raise JobError(f"{self.path}: cannot write ({error.strerror})") from None
        self.done[record["path"]] = (record["text"], record["error"])

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()
            self.stream = None


def iter_records(path: Path) -> Iterator[dict]:
    """The records of a ledger, one at a time (JobError at a line that is not ours)."""
    if not Path(path).exists():
        return iter(())
    return (record for _, _, record in Scan(Path(path), None))


def read_records(path: Path) -> tuple[list[tuple[dict, bytes]], bool]:
    """The complete records of a ledger as (record, raw line), and whether a torn last line was left
    out. Small outputs only: it holds them all."""
    scan = Scan(Path(path), None)
    found = [(record, raw) for _, raw, record in scan] if Path(path).exists() else []
    return found, scan.torn is not None


def rewrite(path: Path, keep, model: str | None = None) -> None:
    """Rewrite `path` with the lines for which keep(record) is true, atomically and streamed."""
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as stream:
            for _, raw, record in Scan(path, model):
                if keep(record):
                    stream.write(raw)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def write_atomic(path: Path, data: bytes, sync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "wb") as stream:
        stream.write(data)
        if sync:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(partial, path)


def part_path(output: Path, rank: int, world: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}of{world}")
