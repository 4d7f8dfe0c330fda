"""The output folder rules: --out is new, empty, or a previous import's own output; the import is built
in OUT.partial and renamed into place; nothing the tool did not write is ever deleted."""

from __future__ import annotations

import fcntl
import json
import os
import re
from pathlib import Path

from recog.datasets.importers.base import ImporterError

TOOL = "recog data import"
REPORT = "import-report.json"
MARKER = ".recog-data-import"  # written first into OUT.partial: the folder is this tool's work in progress
_OWN = re.compile(
    r"^(?:[A-Za-z0-9_-]+\.jsonl|shards/[A-Za-z0-9_-]+-\d{4}\.tar|vocab\.json|import-report\.json|"
    + re.escape(MARKER)
    + r")$"
)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def _files(folder: Path) -> list[str]:
    """Every entry under `folder` that is not a folder, relative, '/'-separated (links are not followed)."""
    found = []
    for root, directories, names in os.walk(folder, followlinks=False):
        for name in names + [d for d in directories if os.path.islink(os.path.join(root, d))]:
            found.append(Path(root, name).relative_to(folder).as_posix())
    return sorted(found)


def _previous_import(folder: Path) -> list[str] | None:
    """The files a previous import wrote into `folder` (from its report), or None when it is not one."""
    try:
        report = json.loads((folder / REPORT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if (
        not isinstance(report, dict)
        or report.get("tool") != TOOL
        or not isinstance(report.get("files"), list)
    ):
        return None
    return [str(name) for name in report["files"]]


def _check_only_ours(folder: Path, listed: list[str] | None, what: str) -> list[str]:
    """The files in `folder`, after checking that the tool wrote every one (listed, or by name)."""
    files = _files(folder)
    foreign = [
        name
        for name in files
        if name != MARKER and (name not in listed if listed is not None else not _OWN.match(name))
    ]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ImporterError(
            f"{folder}: {what}, but it holds files the import did not write ({shown}); "
            "move them away or choose another --out"
        )
    return files


def _lock(marker: Path, create: bool) -> int:
    """An exclusive lock on the marker of a folder being built: one import per --out at a time."""
    descriptor = os.open(marker, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise ImporterError(
            f"{marker.parent}: another import is writing it now; wait for it or choose another --out"
        ) from None
    return descriptor


class Build:
    """OUT.partial while this import writes it, under an exclusive lock on its marker file."""

    def __init__(self, out: Path, path: Path) -> None:
        self.out, self.path = out, path
        path.mkdir(parents=True)
        self.lock = _lock(path / MARKER, create=True)
        os.write(self.lock, f"{TOOL}: work in progress, renamed to {out.name} when complete\n".encode())

    def release(self, folder: Path) -> None:
        (folder / MARKER).unlink(missing_ok=True)
        os.close(self.lock)

    def abandon(self) -> None:
        """Delete what this import wrote so far (an error or an interrupt)."""
        files = _check_only_ours(self.path, None, "it is this import's unfinished output")
        self.release(self.path)
        _remove(self.path, files)


def _remove(folder: Path, files: list[str]) -> None:
    """Delete `files` (checked to be this tool's) and then the folders they leave empty."""
    for name in files:
        (folder / name).unlink(missing_ok=True)
    for sub in sorted({(folder / name).parent for name in files}, key=lambda p: len(p.parts), reverse=True):
        if sub != folder and sub.is_dir() and not any(sub.iterdir()):
            sub.rmdir()
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()


def prepare(out: Path, sources: list[Path]) -> Build:
    """Check --out against the rules and start a fresh OUT.partial to build in."""
    out = Path(os.path.abspath(out))
    for source in sources:
        source = Path(os.path.abspath(source))
        if _inside(out, source) or _inside(source, out) or _inside(out.resolve(), source.resolve()):
            raise ImporterError(
                f"{out}: --out must lie outside the source {source} (the source is only read)"
            )
    if out.exists() or out.is_symlink():
        if out.is_symlink() or not out.is_dir():
            raise ImporterError(f"{out}: exists and is not a folder")
        if any(out.iterdir()):
            listed = _previous_import(out)
            if listed is None:
                raise ImporterError(
                    f"{out}: not empty and not the output of a previous import (no {REPORT} from {TOOL}); "
                    "--out must be new, empty, or an earlier import to replace"
                )
            _check_only_ours(out, listed, "it is an earlier import to replace")
    for leftover in (_sibling(out, "partial"), _sibling(out, "old")):  # from an interrupted earlier run
        if leftover.exists() or leftover.is_symlink():
            names = _previous_import(leftover) if leftover.is_dir() and not leftover.is_symlink() else None
            if names is None and (leftover.is_symlink() or not (leftover / MARKER).is_file()):
                raise ImporterError(f"{leftover}: exists and is not a folder this tool left; remove it")
            lock = _lock(leftover / MARKER, create=False) if (leftover / MARKER).is_file() else None
            try:
                files = _check_only_ours(leftover, names, "it is left from an interrupted import")
                (leftover / MARKER).unlink(missing_ok=True)
                _remove(leftover, files)
            finally:
                if lock is not None:
                    os.close(lock)
    return Build(out, _sibling(out, "partial"))


def _sibling(out: Path, suffix: str) -> Path:
    return out.with_name(f"{out.name}.{suffix}")


def finish(build: Build, report: dict) -> None:
    """Write the report (listing every file written) and rename OUT.partial to OUT. An earlier import at
    OUT is first renamed to OUT.old and deleted after the switch, its listed files only."""
    partial, out = build.path, build.out
    report["files"] = [*[name for name in _files(partial) if name != MARKER], REPORT]
    (partial / REPORT).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    if out.is_dir() and any(out.iterdir()):
        listed = _previous_import(out)
        if listed is None:  # changed under us since prepare()
            build.release(partial)
            raise ImporterError(f"{out}: is no longer an earlier import; the new one is left in {partial}")
        files = _check_only_ours(out, listed, "it is an earlier import to replace")
        old = _sibling(out, "old")
        os.rename(out, old)
        os.rename(partial, out)
        _remove(old, files)
    else:
        os.replace(partial, out)  # onto a missing or empty folder
    build.release(out)
