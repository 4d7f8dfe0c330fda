"""Mozilla Common Voice: a language folder holding train.tsv, dev.tsv and test.tsv (tab separated, a
header row, columns client_id, path, sentence, and metadata such as age, gender, accents) and clips/
with the MP3 files the `path` column names. MP3 is decoded by libsndfile (>= 1.1.0)."""

from __future__ import annotations

import csv
import sys
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
)
from recog.datasets.importers.convert import mp3_supported

TABLES = {"train.tsv": "train", "dev.tsv": "dev", "test.tsv": "test"}
REQUIRED = ("client_id", "path", "sentence")
METADATA = ("age", "gender", "accents", "accent", "variant", "locale", "segment")


def read_table(table: Path) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a TSV; Common Voice sentences hold quotes, so no quoting."""
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    with open(table, encoding="utf-8", errors="replace", newline="") as stream:
        rows = csv.reader(stream, delimiter="\t", quoting=csv.QUOTE_NONE)
        header = next(rows, None)
        if not header:
            raise ImporterError(f"{table}: empty file (expected a header row)")
        return [name.strip() for name in header], [(rows.line_num, row) for row in rows if any(row)]


def scan(sources: list[Path], options: Options) -> Scan:
    keys, result = Keys(), Scan()
    for source in sources:
        tables = [(source / name, split) for name, split in TABLES.items() if (source / name).is_file()]
        if not source.is_dir() or not tables:
            raise ImporterError(
                f"{source}: no train.tsv, dev.tsv or test.tsv (expected a Common Voice language folder)"
            )
        for table, split in tables:
            header, rows = read_table(table)
            missing = [name for name in REQUIRED if name not in header]
            if missing:
                raise ImporterError(
                    f"{table}: the header has no column {', '.join(missing)} (it has: {', '.join(header)})"
                )
            index = {name: header.index(name) for name in header}
            needed = max(index[name] for name in REQUIRED) + 1
            for number, row in rows:
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
                clip = source / "clips" / row[index["path"]].strip()
                text = normalise_text(row[index["sentence"]])
                if not row[index["path"]].strip():
                    result.problems.append(
                        Problem(where, "no clip named in the path column", "missing audio")
                    )
                elif not text:
                    result.problems.append(Problem(where, f"{clip.name}: empty sentence", "empty text"))
                elif not clip.is_file():
                    result.problems.append(Problem(where, f"clip {clip} not found", "missing audio"))
                else:
                    key, taken = keys.new(clip.name.rsplit(".", 1)[0])
                    if taken:
                        result.problems.append(
                            Problem(where, f"{clip.name}: clip listed before, kept as {key}", "duplicate key")
                        )
                    fields = {"speaker": row[index["client_id"]].strip()}
                    fields.update(
                        {
                            n: row[index[n]].strip()
                            for n in METADATA
                            if n in index and index[n] < len(row) and row[index[n]].strip()
                        }
                    )
                    result.candidates.append(Candidate(key, text, clip, split, fields))
    if not mp3_supported() and any(c.path.suffix.lower() == ".mp3" for c in result.candidates):
        print(
            "[import] this soundfile's libsndfile has no MP3 support: every .mp3 clip will be reported and skipped "
            "(install soundfile >= 0.12 from its pip wheel, which bundles libsndfile >= 1.1.0)",
            file=sys.stderr,
        )
    return result


FORMAT = Format(
    "commonvoice",
    "speech",
    ("speaker",),
    scan,
    "Common Voice language folder (train/dev/test.tsv + clips/*.mp3)",
)
