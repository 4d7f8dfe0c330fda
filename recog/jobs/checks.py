"""Checks made before any work: option values (used as argparse types, so a bad value is one line at
parse time), the model's kind, the model's id; and `isolated`, which keeps a failing batch from
costing other inputs their lines."""

from __future__ import annotations

import argparse
import hashlib
import math
import os
import zipfile
from collections.abc import Callable
from pathlib import Path

from recog.jobs.ledger import JobError, check_output_path


# ---------------------------------------------------------------- option values
def positive_int(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def non_negative_int(text: str) -> int:
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def positive_float(text: str) -> float:
    value = _number(text, float)
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number above 0, got {text}")
    return value


def _number(text: str, kind: type):
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
        ) from None


def device(text: str) -> str:
    """auto, cpu, cuda or cuda:N, and a CUDA device only where there is one."""
    import torch

    if text in ("auto", "cpu"):
        return text
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}") from None
    if parsed.type != "cuda":
        raise argparse.ArgumentTypeError(f"expected auto, cpu, cuda or cuda:N, got {text!r}")
    if not torch.cuda.is_available():
        raise argparse.ArgumentTypeError(f"{text}: no CUDA GPU here; use cpu or auto")
    if parsed.index is not None and parsed.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"{text}: there are {torch.cuda.device_count()} CUDA GPUs here")
    return text


def output_file(text: str) -> str:
    """-o: a regular file or a new one in a folder."""
    try:
        check_output_path(text)
    except JobError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix(f"-o {text}: ")) from None
    return text


KENLM_MAGIC = b"mmap lm "


def language_model(text: str) -> str:
    """--lm: 'none', an ARPA text file, a KenLM binary or a `recog lm build` file (a zip)."""
    if text == "none":
        return text
    path = Path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"{text}: language model not found")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: not a regular file")
    try:
        with open(path, "rb") as stream:
            head = stream.read(4096)
    except OSError as error:
        raise argparse.ArgumentTypeError(f"{text}: {error.strerror}") from None
    if head.startswith(KENLM_MAGIC) or zipfile.is_zipfile(path):
        return text
    first = head.lstrip().split(b"\n", 1)[0].strip()
    if first != b"\\data\\":
        raise argparse.ArgumentTypeError(
            f"{text}: not a language model (an ARPA file starts with \\data\\; `recog lm build` writes one)"
        )
    return text


MAX_HOTWORDS_BYTES = 1 << 20


def hotwords_file(text: str) -> dict[str, float]:
    """`--hotwords FILE`: one phrase per line, optionally followed by its bonus (natural log, default
    8.0): "kubernetes 10", "new york"; blank lines and lines starting with # are skipped."""
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: hotwords file not found")
    if path.stat().st_size > MAX_HOTWORDS_BYTES:
        raise argparse.ArgumentTypeError(
            f"{text}: over {MAX_HOTWORDS_BYTES} bytes, too large for a hotwords list"
        )
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise argparse.ArgumentTypeError(f"{text}: cannot read as UTF-8 text ({error})") from None
    hotwords: dict[str, float] = {}
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        weight = 8.0
        try:
            weight, parts = float(parts[-1]), parts[:-1]
        except ValueError:
            pass
        if not parts or not math.isfinite(weight):
            raise argparse.ArgumentTypeError(
                f"{text}:{number}: expected a phrase and an optional bonus, got {line!r}"
            )
        hotwords[" ".join(parts)] = weight
    if not hotwords:
        raise argparse.ArgumentTypeError(f"{text}: no hotwords in the file")
    return hotwords


def beam_width(text: str) -> int:
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"beam width must be at least 1, got {text}")
    return value


def check_numbers(**values: float | None) -> None:
    """For the Python API: each named value (None allowed) above 0, else JobError naming it."""
    for name, value in values.items():
        if value is not None and not value > 0:
            raise JobError(f"{name} must be above 0, got {value}")


# ---------------------------------------------------------------- the model
def check_task(recognizer, command: str, error: type[JobError] = JobError) -> None:
    """A model of another kind is refused at once, naming the checkpoint, its task and what reads it."""
    modality = recognizer.modality
    if modality.app == command:
        return
    from recog.modalities import MODALITIES

    name = getattr(recognizer, "checkpoint", None) or "this model"
    wanted = " or ".join(kind.name for kind in MODALITIES.values() if kind.app == command)
    raise error(
        f"{name}: this is {article(modality.name)} {modality.name} model: `{command}` needs "
        f"{article(wanted)} {wanted} model (use `{modality.app}` for {modality.name} models)"
    )


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


_FILE_HASHES: dict[tuple, str] = {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, cached per (path, size, mtime) in this process."""
    info = os.stat(path)
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns)
    if key not in _FILE_HASHES:
        digest = hashlib.sha256()
        with open(path, "rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
        _FILE_HASHES[key] = digest.hexdigest()
    return _FILE_HASHES[key]


def model_tag(recognizer) -> str:
    """ "TASK:SHA" as each output line carries it (the first 16 hex digits of the sha256)."""
    return f"{recognizer.task}:{recognizer.model_id}"


# ---------------------------------------------------------------- per-input isolation
def isolated(items: list, run: Callable[[list], None], fail: Callable[[object, BaseException], None]) -> None:
    """run(items) on the whole batch; if that raises (MemoryError included), run([item]) for each item
    alone, and fail(item, error) for each one that still raises: only the guilty input loses."""
    try:
        run(items)
        return
    except Exception as error:
        if len(items) == 1:
            fail(items[0], error)
            return
    for item in items:
        try:
            run([item])
        except Exception as error:
            fail(item, error)
