"""LibriSpeech: SUBSET/SPEAKER/CHAPTER/ holding SPEAKER-CHAPTER-UTT.flac and SPEAKER-CHAPTER.trans.txt
(lines `UTTID TRANSCRIPT`, upper case). A source is one subset folder (train-clean-100, dev-clean, ...)
or a root holding several; the subset's name gives the split (train*, dev*, test*). SPEAKERS.TXT, when
present next to the subsets, adds each speaker's sex."""

from __future__ import annotations

from pathlib import Path

from recog.datasets.importers.base import (
    Candidate,
    Format,
    ImporterError,
    Keys,
    Options,
    Problem,
    Scan,
    normalise_text,
    split_of_name,
    walk_files,
)


def _has_transcripts(folder: Path) -> bool:
    return any(folder.glob("*/*/*.trans.txt"))


def subsets(source: Path) -> list[Path]:
    """The subset folders a source names: itself, or its children that hold SPEAKER/CHAPTER transcripts."""
    if not source.is_dir():
        raise ImporterError(f"{source}: not a folder (expected a LibriSpeech subset or a folder of subsets)")
    if _has_transcripts(source):
        return [source]
    found = [child for child in sorted(source.iterdir()) if child.is_dir() and _has_transcripts(child)]
    if not found:
        raise ImporterError(
            f"{source}: no LibriSpeech transcripts (SPEAKER/CHAPTER/SPEAKER-CHAPTER.trans.txt) in it or its subfolders"
        )
    return found


def _speakers(folders: list[Path]) -> dict[str, str]:
    """speaker id -> sex from SPEAKERS.TXT (`;ID |SEX| SUBSET |MINUTES| NAME`) in or above the subsets."""
    sexes: dict[str, str] = {}
    for folder in {p for f in folders for p in (f, f.parent)}:
        table = folder / "SPEAKERS.TXT"
        if table.is_file():
            for line in table.read_text(encoding="utf-8", errors="replace").splitlines():
                parts = [part.strip() for part in line.split("|")]
                if not line.startswith(";") and len(parts) >= 2 and parts[0]:
                    sexes[parts[0]] = parts[1]
    return sexes


def scan(sources: list[Path], options: Options) -> Scan:
    folders = [folder for source in sources for folder in subsets(source)]
    for folder in folders:
        if split_of_name(folder.name) is None:
            raise ImporterError(
                f"{folder}: cannot tell its split: LibriSpeech subset names begin with train, dev or test "
                "(train-clean-100, dev-clean, test-other, ...)"
            )
    sexes, keys, result = _speakers(folders), Keys(), Scan()
    for folder in folders:
        split = split_of_name(folder.name)
        transcribed: set[Path] = set()
        for transcript in walk_files(folder, (".trans.txt",)):
            speaker, _, chapter = transcript.name.removesuffix(".trans.txt").partition("-")
            lines = transcript.read_text(encoding="utf-8", errors="replace").splitlines()
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                utterance, _, text = line.strip().partition(" ")
                where = f"{transcript}:{number}"
                audio = transcript.parent / f"{utterance}.flac"
                transcribed.add(audio)
                text = normalise_text(text)
                if not text:
                    result.problems.append(Problem(where, f"{utterance}: empty transcript", "empty text"))
                elif not audio.is_file():
                    result.problems.append(
                        Problem(where, f"{utterance}: audio file {audio.name} not found", "missing audio")
                    )
                else:
                    key, taken = keys.new(utterance)
                    if taken:
                        result.problems.append(
                            Problem(
                                where,
                                f"{utterance}: utterance id seen before, kept as {key}",
                                "duplicate key",
                            )
                        )
                    fields = {"speaker": speaker, "chapter": chapter, "subset": folder.name}
                    if speaker in sexes:
                        fields["sex"] = sexes[speaker]
                    result.candidates.append(Candidate(key, text, audio, split, fields))
        for audio in walk_files(folder, (".flac",)):
            if audio not in transcribed:
                result.problems.append(
                    Problem(
                        str(audio),
                        "missing transcript (no line for it in the chapter's .trans.txt)",
                        "missing transcript",
                    )
                )
    return result


FORMAT = Format(
    "librispeech",
    "speech",
    ("speaker",),
    scan,
    "LibriSpeech subset folders (SPEAKER/CHAPTER/*.flac + .trans.txt)",
)
