"""One writer per output: an `fcntl.flock` on a sidecar `.NAME.lock` beside it, holding the writer's
pid (the output itself is replaced by atomic renames, so a lock on it would not survive them). The
lock file is removed when the writer is done; one left by a killed writer is simply taken over."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from recog.jobs.ledger import JobError


def lock_path(target: Path) -> Path:
    return target.with_name(f".{target.name}.lock")


class OutputLock:
    """`with OutputLock(path):` or acquire()/release(); JobError when another process holds it."""

    def __init__(self, target: str | Path):
        self.target = Path(target)
        self.path = lock_path(self.target)
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        self.target.parent.mkdir(parents=True, exist_ok=True)
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as error:
                raise JobError(f"{self.path}: cannot create the lock file ({error.strerror})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise JobError(
                    f"{self.target} is being written by another recog process (pid {holder})"
                ) from None
            try:  # the previous holder may have removed the file between our open and our lock
                current = os.stat(self.path)
            except FileNotFoundError:
                current = None
            mine = os.fstat(fd)
            if current is None or (current.st_dev, current.st_ino) != (mine.st_dev, mine.st_ino):
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            self.fd = fd
            return self

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # while still held: nobody can take a file being removed
        finally:
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *_) -> None:
        self.release()
