"""`recog data import FORMAT SRC... --out DIR`: argument parsing only; the work is in the importers."""

from __future__ import annotations

import argparse
import os
import sys

from recog.datasets.importers import FORMATS, ImporterError, Options, import_corpus

DESCRIPTION = (
    "Import a corpus into JSONL manifests (train/dev/test.jsonl) and webdataset shards that `recog train` "
    "reads (data.root: DIR), with vocab.json (the characters the transcripts use) and import-report.json "
    "(counts, and every skipped input with the reason). Transcripts are kept as written (NFC, whitespace "
    "collapsed). The source is only read; DIR must be new, empty, or an earlier import, which is replaced."
)
EPILOG = "formats:\n" + "\n".join(f"  {name:<12} {fmt.summary}" for name, fmt in FORMATS.items())


def duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def split_file(text: str) -> tuple[str, str]:
    split, equals, path = text.partition("=")
    if not equals or not split or not path:
        raise argparse.ArgumentTypeError(f"expected SPLIT=FILE such as dev=validationset1.txt, got {text!r}")
    return split, path


def fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("format", choices=list(FORMATS), metavar="FORMAT", help=", ".join(FORMATS))
    parser.add_argument("sources", nargs="+", metavar="SRC", help="source folder(s) (csv: table file(s))")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder (data.root for training)")
    parser.add_argument(
        "--dev-fraction", type=fraction, metavar="F", default=0.0, help="share for dev when SRC has no splits"
    )
    parser.add_argument(
        "--test-fraction",
        type=fraction,
        metavar="F",
        default=0.0,
        help="share for test when SRC has no splits",
    )
    parser.add_argument(
        "--seed", type=int, metavar="N", default=0, help="seed of the fraction split (by speaker/writer)"
    )
    parser.add_argument(
        "--split-file",
        type=split_file,
        action="append",
        default=[],
        metavar="SPLIT=FILE",
        help="IAM formats: ids (lines or forms) of SPLIT (train, dev, test), instead of the task lists in SRC",
    )
    parser.add_argument(
        "--audio-column",
        default="audio",
        metavar="NAME",
        help="csv: column with the audio path (default audio)",
    )
    parser.add_argument(
        "--text-column", default="text", metavar="NAME", help="csv: column with the transcript (default text)"
    )
    parser.add_argument(
        "--speaker-column",
        default="",
        metavar="NAME",
        help="csv: speaker column (default: speaker, client_id if present)",
    )
    parser.add_argument(
        "--sample-rate",
        type=positive,
        metavar="HZ",
        default=16000,
        help="speech: FLAC rate in the shards (16000)",
    )
    parser.add_argument(
        "--samples-per-shard", type=positive, metavar="N", default=2000, help="samples per shard (2000)"
    )
    parser.add_argument(
        "--workers",
        type=positive,
        metavar="N",
        default=max(1, min(4, os.cpu_count() or 1)),
        help="decoding processes",
    )


def run(args: argparse.Namespace) -> int:
    options = Options(
        dev_fraction=args.dev_fraction,
        test_fraction=args.test_fraction,
        seed=args.seed,
        sample_rate=args.sample_rate,
        workers=args.workers,
        samples_per_shard=args.samples_per_shard,
        audio_column=args.audio_column,
        text_column=args.text_column,
        speaker_column=args.speaker_column,
        split_files=tuple(args.split_file),
    )
    try:
        report = import_corpus(args.format, args.sources, args.out, options)
    except ImporterError as error:
        print(f"recog: data import: {error}", file=sys.stderr)
        return 2
    splits = ", ".join(
        f"{name} {row['samples']}" + (f" ({duration(row['seconds'])})" if "seconds" in row else "")
        for name, row in report["splits"].items()
    )
    print(f"imported {report['imported']} samples into {args.out}: {splits or 'none'}")
    if report["failed"]:
        kinds = ", ".join(f"{count} {kind}" for kind, count in report["problems_by_kind"].items())
        print(f"skipped {report['failed']} inputs ({kinds}); each is listed in {args.out}/import-report.json")
    for note in report["notes"]:
        print(f"note: {note}")
    return 0 if report["imported"] else 1


def add_parser(subcommands) -> argparse.ArgumentParser:
    """Add `data` (with `data import`) to the `recog` command's subparsers; returns the `data` parser."""
    data = subcommands.add_parser("data", help="import corpora for training")
    commands = data.add_subparsers(dest="data_command", required=True, parser_class=type(data))
    importer = commands.add_parser(
        "import",
        help="import a corpus (LibriSpeech, Common Voice, CSV, IAM-OnDB, IAM lines, image folder)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_import_arguments(importer)
    importer.set_defaults(func=run)
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m recog.datasets.importers",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_import_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except KeyboardInterrupt:
        print("recog: data import: interrupted", file=sys.stderr)
        return 130
