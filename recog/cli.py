"""The `recog` command: thin argument parsing, then the library does the work."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from recog.audio import AudioError
from recog.checkpoint import CheckpointError
from recog.config import ConfigError
from recog.datasets.manifest import ManifestError
from recog.datasets.sets import CorpusError


def cmd_train(args: argparse.Namespace) -> int:
    from recog.config import load_config
    from recog.train import train

    config = load_config(args.config, args.set or [])
    train(config, args.out, resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from recog.datasets.manifest import read_manifest
    from recog.datasets.preflight import preflight
    from recog.datasets.shards import load_audio
    from recog.recognizer import Recognizer
    from recog.report import format_examples, format_table

    recognizer = Recognizer.load(args.model)
    report = {"checkpoint": args.model, "sets": {}}
    for manifest in args.manifests:
        utterances = read_manifest(manifest)
        audio, errors = load_audio(utterances, recognizer.features.config.sample_rate, workers=2)
        kept, problems = preflight(utterances, audio, errors, recognizer.vocab, lambda samples: 1 << 30)
        for problem in problems:
            print(f"skipped {problem.source}: {problem.reason}", file=sys.stderr)
        kinds = ("greedy", "beam") if args.decoder == "both" else (args.decoder,)
        report["sets"][Path(manifest).stem] = recognizer.evaluate(
            kept, audio, kinds=kinds, group_by=args.group_by
        )
    print(format_table(report))
    print(format_examples(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    return 0


def cmd_transcribe(args: argparse.Namespace) -> int:
    from recog.audio import read_audio
    from recog.recognizer import Recognizer

    recognizer = Recognizer.load(args.model)
    rate = recognizer.features.config.sample_rate
    output = open(args.output, "w") if args.output else sys.stdout
    failures = 0
    for path in args.paths:
        entry = {"path": path, "text": None, "words": [], "duration": None, "error": None}
        try:
            samples = read_audio(path, rate)
            log_probs = recognizer.log_probs([samples])
            transcript = recognizer.decode(log_probs, "beam" if args.beam else "greedy")[0]
            entry.update(
                text=transcript.text, words=transcript.as_dict()["words"], duration=len(samples) / rate
            )
        except AudioError as error:
            entry["error"] = str(error)
            failures += 1
        output.write(json.dumps(entry) + "\n")
        output.flush()
    if output is not sys.stdout:
        output.close()
    return 1 if failures and failures == len(args.paths) else 0


def cmd_lm_build(args: argparse.Namespace) -> int:
    from recog.decode.lm import build_word_lm

    sentences = []
    for path in args.texts:
        sentences += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    build_word_lm(sentences, args.output, args.order)
    print(f"wrote {args.output} ({args.order}-gram, {len(sentences)} sentences)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="recog", description="Speech and handwriting recognition with recurrent CTC models"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model from a YAML config")
    train.add_argument("config", help="YAML config, e.g. configs/speech.yaml")
    train.add_argument(
        "--out", required=True, help="run folder: best.pt, last.pt, metrics.jsonl, report.json, curves.png"
    )
    train.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.lr=1e-3"
    )
    train.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    train.set_defaults(func=cmd_train)

    evaluate = commands.add_parser("eval", help="WER/CER of a model on JSONL manifests")
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("manifests", nargs="+")
    evaluate.add_argument("--decoder", choices=["greedy", "beam", "both"], default="both")
    evaluate.add_argument("--group-by", default="voice", help="manifest field to report per group")
    evaluate.add_argument("-o", "--output", help="write the report as JSON")
    evaluate.set_defaults(func=cmd_eval)

    transcribe = commands.add_parser("transcribe", help="transcribe audio files to JSONL")
    transcribe.add_argument("--model", required=True)
    transcribe.add_argument("paths", nargs="+")
    transcribe.add_argument(
        "--beam", action="store_true", help="beam search with the checkpoint's lexicon and LM"
    )
    transcribe.add_argument("-o", "--output", help="JSONL output (default: stdout)")
    transcribe.set_defaults(func=cmd_transcribe)

    lm = commands.add_parser("lm", help="language models")
    lm_commands = lm.add_subparsers(dest="lm_command", required=True)
    build = lm_commands.add_parser("build", help="build a word n-gram LM (Kneser-Ney) as ARPA")
    build.add_argument("texts", nargs="+", help="text files, one sentence per line")
    build.add_argument("-o", "--output", required=True)
    build.add_argument("--order", type=int, default=3)
    build.set_defaults(func=cmd_lm_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, CheckpointError, ManifestError, AudioError, CorpusError) as error:
        print(f"recog: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recog: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
