"""What every importer shares: the samples a format finds, the problems it reports, transcript
normalisation, keys that shards can hold, and splitting sources that have no splits of their own."""

from __future__ import annotations

import os
import random
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SPLITS = ("train", "dev", "test")
RESERVED_FIELDS = {"key", "text", "duration", "shard", "audio", "path"}  # manifest.py reads these itself


class ImporterError(Exception):
    """An import that cannot start (bad options, unusable --out, a source of the wrong format)."""


@dataclass
class Candidate:
    """One sample a format found: its input file, transcript, split (None: the source has none) and
    metadata fields for the manifest (speaker, writer, subset, ...)."""

    key: str
    text: str
    path: Path
    split: str | None = None
    fields: dict[str, object] = field(default_factory=dict)


@dataclass
class Problem:
    """One input that was skipped: the file, why (one line) and a short kind for the counts."""

    file: str
    reason: str
    kind: str

    def __str__(self) -> str:
        return f"{self.file}: {self.reason}"


@dataclass
class Scan:
    """What a format's scanner found before anything is decoded."""

    candidates: list[Candidate] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)


@dataclass(frozen=True)
class Options:
    """Import options shared by the formats (the CLI's flags)."""

    dev_fraction: float = 0.0
    test_fraction: float = 0.0
    seed: int = 0
    sample_rate: int = 16000
    workers: int = 1
    samples_per_shard: int = 2000
    audio_column: str = "audio"
    text_column: str = "text"
    speaker_column: str = ""  # "": a column named speaker, client_id or writer when there is one
    split_files: tuple[tuple[str, str], ...] = ()  # (split, file listing its ids)


@dataclass(frozen=True)
class Format:
    """One importable format: its name, task (speech | ink | image), the manifest fields that group
    samples for --dev-fraction/--test-fraction (the first a sample has), and its scanner."""

    name: str
    task: str
    group_fields: tuple[str, ...]
    scan: Callable[[list[Path], Options], Scan]
    summary: str


def normalise_text(text: str) -> str:
    """Unicode NFC with whitespace runs collapsed to one space; casing and punctuation are kept."""
    return " ".join(unicodedata.normalize("NFC", text).split())


_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def safe_key(name: str) -> str:
    """A shard key: letters, digits, '_' and '-' only (webdataset splits member names at the first '.')."""
    return _UNSAFE.sub("_", name).strip("_") or "sample"


class Keys:
    """Unique keys across an import: a repeated name gets -2, -3, ... (reported by the caller)."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def new(self, name: str) -> tuple[str, bool]:
        """(unique key for `name`, whether `name` was already taken)."""
        key, taken = safe_key(name), False
        if key in self.used:
            taken, number = True, 2
            while f"{key}-{number}" in self.used:
                number += 1
            key = f"{key}-{number}"
        self.used.add(key)
        return key, taken


def walk_files(root: Path, suffixes: tuple[str, ...]) -> Iterator[Path]:
    """Regular files under `root` whose names end in one of `suffixes` (case-insensitive), sorted;
    symbolic links to folders are not followed (no cycles)."""
    for folder, directories, names in os.walk(root, followlinks=False):
        directories.sort()
        for name in sorted(names):
            if name.lower().endswith(suffixes) and os.path.isfile(os.path.join(folder, name)):
                yield Path(folder, name)


def split_of_name(name: str) -> str | None:
    """train / dev / test from a folder or file name such as train-clean-100, dev, validation, test.tsv."""
    lowered = name.lower()
    for prefix, split in (
        ("train", "train"),
        ("dev", "dev"),
        ("valid", "dev"),
        ("val", "dev"),
        ("test", "test"),
    ):
        if lowered.startswith(prefix):
            return split
    return None


def read_id_list(path: Path) -> set[str]:
    """Ids listed one per line (first field), blank lines and '#' comments skipped."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as error:
        raise ImporterError(f"{path}: cannot read the split list ({error.strerror or error})") from None
    return {line.split()[0] for line in lines if line.strip() and not line.lstrip().startswith("#")}


def split_lists(options: Options, found: dict[str, list[Path]]) -> dict[str, set[str]]:
    """split -> listed ids: from --split-file SPLIT=FILE when given, else the lists found in the source."""
    lists: dict[str, set[str]] = {}
    if options.split_files:
        for split, name in options.split_files:
            lists.setdefault(split, set()).update(read_id_list(Path(name)))
        return lists
    for split, paths in found.items():
        for path in paths:
            lists.setdefault(split, set()).update(read_id_list(path))
    return lists


def assign_splits(candidates: list[Candidate], options: Options, group_fields: tuple[str, ...]) -> None:
    """Give the candidates without a split one: whole groups (speaker, writer; else single samples),
    shuffled with the seed, go to test until --test-fraction of the samples is reached, then to dev;
    the rest, and always at least one group, to train."""
    loose = [c for c in candidates if c.split is None]
    fractions = options.dev_fraction + options.test_fraction
    if not loose:
        if fractions > 0 and candidates:
            raise ImporterError(
                "--dev-fraction/--test-fraction: the source has its own splits "
                f"({', '.join(sorted({c.split for c in candidates}))}); they apply to sources without"
            )
        return
    groups: dict[str, list[Candidate]] = {}
    for candidate in loose:
        name = next((f"{n}={candidate.fields[n]}" for n in group_fields if candidate.fields.get(n)), None)
        groups.setdefault(name or f"key={candidate.key}", []).append(candidate)
    order = sorted(groups)
    random.Random(options.seed).shuffle(order)
    targets = [
        (split, max(1, round(fraction * len(loose))) if fraction > 0 else 0)
        for split, fraction in (("test", options.test_fraction), ("dev", options.dev_fraction))
    ]
    position = 0
    for split, target in targets:
        taken = 0
        while taken < target and position < len(order) - 1:
            for candidate in groups[order[position]]:
                candidate.split = split
            taken += len(groups[order[position]])
            position += 1
    for name in order[position:]:
        for candidate in groups[name]:
            candidate.split = "train"
