"""Which files a job reads: folders walked once each (symlink cycles cut by the folder's device and
inode), each file once, and only regular files opened (a FIFO or a device gets an error line)."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterable
from pathlib import Path

KINDS = {
    stat.S_IFIFO: "a FIFO",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFSOCK: "a socket",
    stat.S_IFDIR: "a folder",
}


def kind_of(mode: int) -> str:
    return KINDS.get(stat.S_IFMT(mode), "not a plain file")


def walk(folder: str | Path, suffixes: Iterable[str]) -> list[str]:
    """Files under `folder` (symlinks followed) whose suffix is one of `suffixes`, hidden names skipped,
    sorted, a folder's files before its subfolders. A folder reached again (a `loop -> .` link) is not
    entered twice, and a file reached under a second name is listed once. Paths start with `folder`."""
    wanted = {suffix.lower() for suffix in suffixes}
    found: list[str] = []
    seen_folders: set[tuple[int, int]] = set()
    seen_files: set[tuple[int, int]] = set()
    pending = [str(folder)]
    while pending:
        current = pending.pop()
        try:
            info = os.stat(current)
            if (info.st_dev, info.st_ino) in seen_folders:
                continue
            seen_folders.add((info.st_dev, info.st_ino))
            with os.scandir(current) as entries:
                names = sorted(entry.name for entry in entries if not entry.name.startswith("."))
        except OSError:  # unreadable or vanished: nothing to list (a named path still gets its line)
            continue
        subfolders = []
        for name in names:
            path = os.path.join(current, name)
            try:
                info = os.stat(path)
            except OSError:  # a dangling link
                continue
            if stat.S_ISDIR(info.st_mode):
                subfolders.append(path)
            elif Path(name).suffix.lower() in wanted and (info.st_dev, info.st_ino) not in seen_files:
                seen_files.add((info.st_dev, info.st_ino))
                found.append(path)
        pending.extend(reversed(subfolders))  # depth first, in sorted order
    return found


def not_regular(path: str) -> str | None:
    """The error line for an input that exists and is not a regular file (reading a FIFO blocks, a
    device never ends); None for a regular file, or a missing one (its reader says so in its words)."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return None
    return None if stat.S_ISREG(mode) else f"{path}: not a regular file ({kind_of(mode)})"
