"""Importers for real corpora: `recog data import FORMAT SRC... --out DIR` turns LibriSpeech, Common
Voice, an audio CSV, IAM-OnDB, IAM lines or a folder of line images into the JSONL manifests and
webdataset shards that training reads, plus vocab.json and import-report.json."""

from __future__ import annotations

from pathlib import Path
from typing import TextIO

from recog.datasets.importers import commonvoice, iam, image_folder, librispeech, table
from recog.datasets.importers.base import Format, ImporterError, Options
from recog.datasets.importers.writer import run_import

FORMATS: dict[str, Format] = {
    fmt.name: fmt
    for fmt in (
        librispeech.FORMAT,
        commonvoice.FORMAT,
        table.FORMAT,
        iam.ONDB,
        iam.LINES,
        image_folder.FORMAT,
    )
}

__all__ = ["FORMATS", "Format", "ImporterError", "Options", "import_corpus"]


def import_corpus(
    format_name: str,
    sources: list[str | Path],
    out: str | Path,
    options: Options | None = None,
    log: TextIO | None = None,
) -> dict:
    """Import `sources` (format `format_name`) into the new folder `out`; returns import-report.json's
    content. ImporterError when the import cannot start; bad inputs are skipped and listed in the report."""
    if format_name not in FORMATS:
        raise ImporterError(f"unknown format {format_name!r}: expected one of {', '.join(FORMATS)}")
    return run_import(FORMATS[format_name], [Path(s) for s in sources], Path(out), options or Options(), log)
