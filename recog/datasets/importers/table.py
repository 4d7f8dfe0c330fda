"""A generic audio table: a CSV or TSV file with a header row, an audio column (a path relative to the
table's folder) and a text column (names set by --audio-column/--text-column). Other columns become
manifest fields; a `speaker` column groups --dev-fraction/--test-fraction; a `split` column (train,
dev, test) or a table named train/dev/test.csv gives the split."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from recog.datasets.importers.base import (
    RESERVED_FIELDS,
    SPLITS,
    Candidate,
    Format,
    ImporterError,
    Keys,
    Options,
    Problem,
    Scan,
    normalise_text,
)

SPEAKER_COLUMNS = ("speaker", "speaker_id", "client_id", "writer")
SPLIT_NAMES = {
    "train": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
}


def _delimiter(table: Path, header: str) -> str:
    if table.suffix.lower() in (".tsv", ".tab"):
        return "\t"
    counts = {d: header.count(d) for d in (",", "\t", ";", "|")}
    return max(counts, key=counts.get) if max(counts.values()) else ","


def _speaker_column(table: Path, header: list[str], options: Options) -> str | None:
    if options.speaker_column:
        if options.speaker_column not in header:
            raise ImporterError(
                f"{table}: no column {options.speaker_column!r} (--speaker-column); it has: {', '.join(header)}"
            )
        return options.speaker_column
    return next((name for name in SPEAKER_COLUMNS if name in header), None)


def scan_table(table: Path, options: Options, keys: Keys, result: Scan) -> None:
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    try:
        with open(table, encoding="utf-8-sig", errors="replace", newline="") as stream:
            first = stream.readline()
            stream.seek(0)
            rows = list(csv.reader(stream, delimiter=_delimiter(table, first)))
    except OSError as error:
        raise ImporterError(f"{table}: cannot read ({error.strerror or error})") from None
    if not rows:
        raise ImporterError(f"{table}: empty file (expected a header row)")
    header = [name.strip() for name in rows[0]]
    for column, flag in ((options.audio_column, "--audio-column"), (options.text_column, "--text-column")):
        if column not in header:
            raise ImporterError(
                f"{table}: the header has no column {column!r} ({flag}); it has: {', '.join(header)} "
                "(the first row must name the columns)"
            )
    index = {name: position for position, name in enumerate(header)}
    speaker = _speaker_column(table, header, options)
    file_split = SPLIT_NAMES.get(table.stem.lower())
    extra = [
        n
        for n in header
        if n not in RESERVED_FIELDS | {"file", "split", options.audio_column, options.text_column}
    ]
    needed = max(index[options.audio_column], index[options.text_column]) + 1
    for number, row in enumerate(rows[1:], start=2):
        if not any(cell.strip() for cell in row):
            continue
        where = f"{table}:{number}"
        if len(row) < needed:
            result.problems.append(
                Problem(
                    where,
                    f"line with too few fields ({len(row)}, the header has {len(header)})",
                    "too few fields",
                )
            )
            continue
        name, text = row[index[options.audio_column]].strip(), normalise_text(row[index[options.text_column]])
        audio = (table.parent / name) if name else None
        split = file_split
        if "split" in index and index["split"] < len(row) and row[index["split"]].strip():
            split = SPLIT_NAMES.get(row[index["split"]].strip().lower())
            if split not in SPLITS:
                result.problems.append(
                    Problem(
                        where,
                        f"unknown split {row[index['split']].strip()!r} (train, dev or test)",
                        "bad split",
                    )
                )
                continue
        if audio is None:
            result.problems.append(
                Problem(where, f"no audio file in column {options.audio_column!r}", "missing audio")
            )
        elif not text:
            result.problems.append(Problem(where, f"{name}: empty transcript", "empty text"))
        elif not audio.is_file():
            result.problems.append(Problem(where, f"audio file {audio} not found", "missing audio"))
        else:
            relative = audio.relative_to(table.parent) if table.parent in audio.parents else Path(audio.name)
            key, taken = keys.new(relative.with_suffix("").as_posix().replace("/", "_"))
            if taken:
                result.problems.append(
                    Problem(where, f"{name}: a second sample with this name, kept as {key}", "duplicate key")
                )
            fields = {
                n: row[index[n]].strip() for n in extra if index[n] < len(row) and row[index[n]].strip()
            }
            if speaker and index[speaker] < len(row) and row[index[speaker]].strip():
                fields["speaker"] = row[index[speaker]].strip()
            result.candidates.append(Candidate(key, text, audio, split, fields))


def scan(sources: list[Path], options: Options) -> Scan:
    keys, result = Keys(), Scan()
    for source in sources:
        if not source.is_file():
            raise ImporterError(f"{source}: not a file (expected a CSV or TSV table with a header row)")
        scan_table(source, options, keys, result)
    return result


FORMAT = Format(
    "csv", "speech", ("speaker",), scan, "CSV/TSV table with a header: audio path and text columns"
)
