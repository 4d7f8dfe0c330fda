"""Many ledgers into one: the parts of a sharded job (or any ledgers of the same model) merged into
the output, one line per path, and only the parts that were checked and merged are removed.

Before anything is written or removed every input is read whole: each must be a ledger (no line that
is not ours, no torn line) of the same model as the output; the output itself or a file given twice
is merged once and never removed. Any doubt is a JobError, and then nothing is touched."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from recog.jobs.ledger import JobError, Scan, warn_legacy
from recog.jobs.lock import OutputLock


def identity(path: Path) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino


def merge(output: Path, parts: list[Path], order: list[str] | None = None, model: str | None = None) -> int:
    """One JSONL from `output` and `parts`: one line per path (a success wins over an error, otherwise
    the first seen), in `order` and then as found; written atomically; the parts then removed. Takes
    every file's lock (a part still being written is refused). Returns the number of lines."""
    output = Path(output)
    with contextlib.ExitStack() as locks:
        locks.enter_context(OutputLock(output))
        return merge_locked(output, parts, order, model, locks)


def merge_locked(output: Path, parts: list[Path], order, model, locks=None) -> int:
    """`merge` for a caller that holds the output's lock already."""
    output = Path(output)
    own = identity(output)
    files, seen = [output], {own} if own else set()
    for part in map(Path, parts):
        key = identity(part)
        if key is None:
            raise JobError(f"{part}: no such file to merge")
        if not part.is_file():
            raise JobError(f"{part}: not a regular file, not a part to merge")
        if key in seen:  # the output itself (`-o out.jsonl out.jsonl*`) or a part given twice
            continue
        seen.add(key)
        files.append(part)
        if locks is not None:
            locks.enter_context(OutputLock(part))
    chosen: dict[str, tuple[int, int, int, bool]] = {}  # path -> (file, offset, length, failed)
    original: list[str] = []  # the paths of `output` as they are: no rewrite when nothing changes
    legacy = False
    for number, path in enumerate(files):
        if not path.exists():
            continue
        scan = Scan(path, model)
        for offset, raw, record in scan:
            if number == 0:
                original.append(record["path"])
            previous = chosen.get(record["path"])
            failed = bool(record.get("error"))
            if previous is None or (previous[3] and not failed):
                chosen[record["path"]] = (number, offset, len(raw), failed)
        if scan.torn is not None:
            if number == 0 and len(files) == 1:
                pass  # our own output's torn tail: the rewrite below leaves it out
            else:
                raise JobError(
                    f"{path}: its last line is torn (the run writing it was interrupted): rerun that "
                    "job to finish it, then merge"
                )
        model, legacy = scan.model, legacy or scan.legacy
    if legacy:
        warn_legacy(output)
    rank = {path: number for number, path in enumerate(order or [])}
    paths = sorted(chosen, key=lambda path: rank.get(path, len(rank)))  # stable: the rest as found
    torn = output.exists() and len(files) == 1 and scan_is_torn(output)
    if len(files) > 1 or original != paths or torn:
        partial = output.with_name(f".{output.name}.partial-{os.getpid()}")
        streams = [open(path, "rb") if path.exists() else None for path in files]  # noqa: SIM115
        try:
            with open(partial, "wb") as stream:
                for path in paths:
                    number, offset, length, _ = chosen[path]
                    streams[number].seek(offset)
                    stream.write(streams[number].read(length))
                stream.flush()
                os.fsync(stream.fileno())
            os.replace(partial, output)
        finally:
            partial.unlink(missing_ok=True)
            for source in streams:
                if source is not None:
                    source.close()
    for part in files[1:]:
        part.unlink()
    return len(paths)


def scan_is_torn(path: Path) -> bool:
    with open(path, "rb") as stream:
        stream.seek(0, os.SEEK_END)
        if stream.tell() == 0:
            return False
        stream.seek(-1, os.SEEK_END)
        return stream.read(1) != b"\n"
