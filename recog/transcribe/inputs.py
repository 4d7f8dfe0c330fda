"""What to transcribe: files, folders, list files and JSONL manifests -> `Source`s, with references."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from recog.audio import AUDIO_SUFFIXES
from recog.jobs import walk
from recog.transcribe.options import TranscribeError

LIST_SUFFIXES = frozenset({".txt", ".lst", ".list", ".scp"})


@dataclass
class Source:
    path: str  # as written in the output
    name: str  # per-file output name, relative to out_dir, without suffix
    reference: str | None = None


def collect_sources(paths: list[str]) -> list[Source]:
    """Expand folders (recursively, audio suffixes only), list files and JSONL manifests; each audio
    file once, in the order given. A path that is missing or not audio still becomes a source: it gets
    a line with the error."""
    sources: dict[str, Source] = {}

    def add(path: str, name: str, reference: str | None = None) -> None:
        sources.setdefault(path, Source(path, name, reference))

    for given in paths:
        location = Path(given)
        suffix = location.suffix.lower()
        if location.is_dir():
            for relative in _walk_audio(location):
                add(os.path.join(given, relative), str(Path(relative).with_suffix("")))
        elif suffix == ".jsonl" and location.is_file():
            for path, reference in _read_manifest(location):
                add(path, Path(path).stem, reference)
        elif suffix in LIST_SUFFIXES and location.is_file():
            for line in location.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    beside = location.parent / line
                    path = str(beside) if not os.path.isabs(line) and beside.exists() else line
                    add(path, Path(path).stem)
        else:
            add(given, location.stem)
    return _unique_names(list(sources.values()))


def _walk_audio(folder: Path) -> list[str]:
    """Audio files under `folder`, relative to it (cycle-safe, each file once: see `recog.jobs.walk`)."""
    return [os.path.relpath(path, folder) for path in walk(folder, AUDIO_SUFFIXES)]


def _read_manifest(path: Path) -> list[tuple[str, str | None]]:
    """(audio path, reference text or None) per line of a manifest; paths relative to its folder."""
    entries = []
    with path.open() as stream:
        for number, line in enumerate(stream, start=1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
                audio = entry.get("audio") or entry["path"]
            except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
                raise TranscribeError(
                    f"{path}:{number}: expected a JSON object with 'audio' or 'path'"
                ) from None
            text = entry.get("text")
            entries.append((str(path.parent / audio), None if text is None else str(text)))
    return entries


def _unique_names(sources: list[Source]) -> list[Source]:
    """Per-file output names that do not collide: x.wav and x.flac give x and x.flac, then x.flac-2."""
    taken: set[str] = set()
    for source in sources:
        name, number = source.name, 1
        if name in taken:  # x.wav and x.flac: x and x.flac
            name = source.name = source.name + Path(source.path).suffix
        while name in taken:
            number += 1
            name = f"{source.name}-{number}"
        taken.add(name)
        source.name = name
    return sources


def beside_reference(source: Source) -> Path:
    """Where `--ref txt` finds the reference of an audio file: NAME.txt beside it."""
    return Path(source.path).with_suffix(".txt")


def attach_references(sources: list[Source], references: str | None) -> None:
    """Reference texts from a JSONL manifest (audio/path + text) or from NAME.txt beside each file."""
    if references is None:
        return
    if references in ("txt", ".txt"):
        for source in sources:
            beside = beside_reference(source)
            if beside.is_file():
                source.reference = beside.read_text()
        return
    if not Path(references).is_file():
        raise TranscribeError(f"{references}: reference manifest not found")
    texts = {os.path.abspath(path): text for path, text in _read_manifest(Path(references))}
    for source in sources:
        source.reference = texts.get(os.path.abspath(source.path), source.reference)


def check_outputs_spare_references(sources: list[Source], formats: tuple[str, ...], out_dir: Path) -> None:
    """`--ref txt` reads NAME.txt beside each audio file; `--format txt` into that same folder would
    write the transcript over it (and a rerun would score the model against itself): refuse."""
    if "txt" not in formats:
        return
    for source in sources:
        reference = beside_reference(source)
        if source.reference is None or not reference.is_file():
            continue
        target = out_dir / f"{source.name}.txt"
        if os.path.realpath(target) == os.path.realpath(reference):
            raise TranscribeError(
                f"--format txt would overwrite the reference {reference} (--ref txt reads NAME.txt "
                f"beside each audio file): write the outputs elsewhere with --out-dir DIR"
            )


def normalise(text: str, chars: set[str]) -> str:
    """Lower case, characters outside the model's alphabet become spaces: what the model can write."""
    return " ".join("".join(c if c in chars else " " for c in text.lower()).split())
