"""The `recog` command: thin argument parsing, then the library does the work."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from recog.audio import AudioError
from recog.checkpoint import CheckpointError
from recog.config import ConfigError, DecodeConfig
from recog.datasets.manifest import ManifestError
from recog.datasets.sets import CorpusError
from recog.jobs import JobError, StreamError
from recog.jobs.checks import (
    beam_width,
    device,
    hotwords_file,
    language_model,
    non_negative_int,
    output_file,
    positive_float,
    positive_int,
)
from recog.precision import PRECISIONS, PrecisionError


def cmd_train(args: argparse.Namespace) -> int:
    from recog.config import load_config
    from recog.train import train

    config = load_config(args.config, args.set or [])
    train(config, args.out, resume=args.resume)
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from recog.datasets.sets import load_manifest_inputs
    from recog.recognizer import Recognizer
    from recog.report import format_examples, format_table

    recognizer = Recognizer.load(args.model)
    report = {"checkpoint": args.model, "task": recognizer.task, "sets": {}}
    if args.plots:  # every set's plots folder checked before any work
        from recog.plots import PlotFolder, PlotsError, eval_plots

        try:
            folders = {m: PlotFolder(Path(args.plots) / Path(m).stem) for m in args.manifests}
        except PlotsError as error:
            print(f"recog: eval: --plots {error}", file=sys.stderr)
            return 2
    for manifest in args.manifests:
        kept, stored, problems = load_manifest_inputs(
            recognizer.modality, manifest, recognizer.vocab, workers=2, text=recognizer.text
        )
        for problem in problems:
            print(f"skipped {problem.source}: {problem.reason}", file=sys.stderr)
        if not kept:
            print(f"recog: {manifest}: no usable samples", file=sys.stderr)
            return 2
        kinds = ("greedy", "beam") if args.decoder == "both" else (args.decoder,)
        report["sets"][Path(manifest).stem] = recognizer.evaluate(
            kept, stored, kinds=kinds, group_by=args.group_by
        )
        if args.plots:
            decoder = "beam" if args.decoder == "beam" else "greedy"
            plots = eval_plots(recognizer, kept, stored, folders[manifest], Path(manifest).stem, decoder)
            print(f"recog: eval: plots of {manifest} in {folders[manifest].folder}", file=sys.stderr)
            report["sets"][Path(manifest).stem]["plots"] = plots["files"]
    print(format_table(report))
    print(format_examples(report))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=2))
    return 0


def _load_for_decoding(args: argparse.Namespace):
    """(recognizer, beam?) for `transcribe` and `read`: the model on its device, beam search (the
    default) set up with --beam/--lm/--hotwords/--nbest, or greedy with --greedy; (None, False) after saying why when the LM file is missing."""
    from recog.recognizer import Recognizer
    from recog.transcribe import default_device

    beam_options = [
        name
        for name, value in (
            ("--beam", args.beam),
            ("--lm", args.lm),
            ("--hotwords", args.hotwords),
            ("--nbest", args.nbest),
        )
        if value is not None
    ]
    if args.greedy and beam_options:
        raise JobError(f"--greedy cannot be combined with {', '.join(beam_options)} (beam search options)")
    recognizer = Recognizer.load(args.model, default_device() if args.device == "auto" else args.device)
    if not args.greedy:
        try:
            recognizer.configure_beam(args.beam or None, args.lm, args.hotwords, args.nbest)
        except ValueError as error:  # hotwords the model cannot write, --nbest above the beam width
            raise JobError(str(error)) from None
    return recognizer, not args.greedy


def cmd_transcribe(args: argparse.Namespace) -> int:
    from recog.transcribe import Options, run

    if args.engine == "onnx":
        from recog.export import onnx_settings

        args.device, args.precision = onnx_settings(args.device, args.precision)
    elif args.onnx:
        raise JobError("--onnx FILE needs --engine onnx")
    recognizer, beam = _load_for_decoding(args)
    if recognizer is None:
        return 2
    if args.engine == "onnx":
        recognizer.use_onnx(args.onnx)
    options = Options(
        output=args.output,
        formats=tuple(kind.strip() for kind in args.format.split(",") if kind.strip()),
        out_dir=args.out_dir,
        decoder="beam" if beam else "greedy",
        precision=args.precision,
        workers=args.workers,
        batch_seconds=args.batch_seconds,
        chunk_seconds=args.chunk_seconds,
        references=args.ref,
        retry_failed=args.retry_failed,
        shard=args.shard,
        progress=args.progress,
        stream=None if args.output else sys.stdout,
    )
    summary = run(recognizer, args.paths, options)
    print(f"recog: {summary.line()}", file=sys.stderr)
    if args.summary:
        Path(args.summary).write_text(json.dumps(summary.as_dict(), indent=2) + "\n")
    if summary.failed and (args.strict or summary.failed == summary.files):
        return 1
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from recog.export import export_checkpoint

    print(f"recog: wrote {export_checkpoint(args.model, args.out)}", file=sys.stderr)
    return 0


def cmd_read(args: argparse.Namespace) -> int:
    from recog.read import ReadOptions, run

    recognizer, beam = _load_for_decoding(args)
    if recognizer is None:
        return 2
    options = ReadOptions(
        output=args.output,
        decoder="beam" if beam else "greedy",
        precision=args.precision,
        batch_size=args.batch_size,
        workers=args.workers,
        retry_failed=args.retry_failed,
        shard=args.shard,
        progress=args.progress,
        stream=None if args.output else sys.stdout,
    )
    summary = run(recognizer, args.paths, options)
    print(f"recog: {summary.line()}", file=sys.stderr)
    if summary.failed and (args.strict or summary.failed == summary.files):
        return 1
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from recog.serve import ServeError, load_service, serve
    from recog.transcribe import default_device

    device = default_device() if args.device == "auto" else args.device
    decoder = "beam" if args.beam else "greedy"
    try:
        service = load_service(args.model, args.ink_model, args.image_model, device=device, decoder=decoder)
        serve(service, args.host, args.port, verbose=not args.quiet)
    except ServeError as error:
        print(f"recog: serve: {error}", file=sys.stderr)
        return 2
    except OSError as error:  # the port is taken, the host is not this machine's, ...
        print(
            f"recog: serve: cannot listen on {args.host}:{args.port} ({error.strerror or error})",
            file=sys.stderr,
        )
        return 2
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from recog.jobs import merge

    count = merge(Path(args.output), [Path(part) for part in args.parts])
    print(f"recog: {args.output}: {count} files", file=sys.stderr)
    return 0


def cmd_align(args: argparse.Namespace) -> int:
    from recog.align import INPUT_ERRORS, AlignOptions, read_text, run
    from recog.recognizer import Recognizer

    if (args.text_file is None) == (args.text is None):
        print("recog: align: give the text as a file or with --text (one of them)", file=sys.stderr)
        return 2
    options = AlignOptions(args.format, args.output, args.force, args.words_per_cue)
    try:
        text = args.text if args.text is not None else read_text(args.text_file)
        recognizer = Recognizer.load(args.model, args.device)
        record, content = run(recognizer, args.input, text, options, args.text_file or "--text")
    except INPUT_ERRORS as error:
        print(f"recog: align: {error}", file=sys.stderr)
        return 2
    if record["dropped"]:
        print(f"recog: align: dropped characters the model lacks: {record['dropped']!r}", file=sys.stderr)
    if not args.output:
        sys.stdout.write(content)
    return 0


class BeamWidth(argparse.Action):
    """`--beam` alone (the checkpoint's width) or `--beam N`; `--beam file.wav` keeps file.wav as input."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value is not None and value.lstrip("+-").isdigit():
            try:
                namespace.beam = beam_width(value)
            except argparse.ArgumentTypeError as error:
                parser.error(f"argument --beam: {error}")
        elif value is None:
            namespace.beam = 0
        else:
            namespace.beam = 0
            namespace.leading_paths = [*getattr(namespace, "leading_paths", []), value]


def add_decoding_options(parser: argparse.ArgumentParser) -> None:
    """Beam search with the checkpoint's lexicon and LM is the default; --greedy for speed."""
    parser.add_argument(
        "--beam",
        nargs="?",
        action=BeamWidth,
        metavar="N",
        help="beam width of the beam search (the default decoder; default width: the checkpoint's)",
    )
    parser.add_argument(
        "--greedy", action="store_true", help="greedy decoding: faster, no LM or lexicon (about 3x the WER)"
    )
    parser.add_argument("--lm", type=language_model, help="another word LM (ARPA) for beam search, or 'none'")
    parser.add_argument(
        "--hotwords",
        type=hotwords_file,
        metavar="FILE",
        help="phrases to favour, one per line, each optionally followed by its bonus (default 8.0)",
    )
    parser.add_argument(
        "--nbest", type=positive_int, metavar="N", help="also write the N best texts with their scores"
    )


def shard(text: str) -> tuple[int, int]:
    try:
        rank, world = (int(part) for part in text.split("/"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected RANK/WORLD such as 0/4, got {text!r}") from None
    if not 0 <= rank < world:
        raise argparse.ArgumentTypeError(f"rank {rank} is not in 0..{world - 1}")
    return rank, world


def cmd_lm_build(args: argparse.Namespace) -> int:
    from recog.decode.lm import NGramLM, build_word_lm

    sentences = []
    for path in args.texts:
        sentences += [line.strip() for line in Path(path).read_text().splitlines() if line.strip()]
    order = args.order or (3 if args.unit == "word" else 6)
    if args.unit == "word" and args.output.endswith(".arpa"):
        build_word_lm(sentences, args.output, order)
    else:
        lm = NGramLM.build(sentences, order, args.unit)
        if args.output.endswith(".arpa"):
            lm.write_arpa(args.output)
        else:
            lm.save(args.output)
    kind = "" if args.unit == "word" else f" {args.unit}"
    print(f"wrote {args.output} ({order}-gram{kind}, {len(sentences)} sentences)")
    return 0


def cmd_lm_tune(args: argparse.Namespace) -> int:
    from recog.datasets.sets import load_manifest_inputs
    from recog.decode.ctc import CTCBeamDecoder, checkpoint_language_model
    from recog.decode.tuning import tune
    from recog.recognizer import Recognizer

    recognizer = Recognizer.load(args.model)
    lm, lexicon = checkpoint_language_model(recognizer.language_model)
    kept, stored, problems = load_manifest_inputs(
        recognizer.modality, args.manifest, recognizer.vocab, text=recognizer.text
    )
    for problem in problems:
        print(f"skipped {problem.source}: {problem.reason}", file=sys.stderr)
    if not kept:
        print(f"recog: lm tune: {args.manifest}: no usable samples", file=sys.stderr)
        return 2
    log_probs = recognizer.log_probs([recognizer.stored_input(stored[u.key]) for u in kept])
    decoder = CTCBeamDecoder(
        recognizer.vocab,
        lm=args.lm or lm,
        lexicon=args.lexicon or lexicon,
        beam=args.beam,
        frame_seconds=recognizer.frame_seconds,
        workers=args.workers,
    )
    references = [u.text for u in kept]
    result = tune(decoder, log_probs, references, args.lm_weights, args.word_scores, args.unk_scores or None)
    print(f"{'lm_weight':>9} {'word_score':>10} {'unk_score':>9} {'WER':>7} {'CER':>7}")
    for row in result["grid"]:
        print(
            f"{row['lm_weight']:>9.2f} {row['word_score']:>10.2f} {row['unk_score']:>9.2f} "
            f"{row['wer']:>7.4f} {row['cer']:>7.4f}"
        )
    best = result["best"]
    print(
        f"best: lm_weight {best['lm_weight']} word_score {best['word_score']} unk_score {best['unk_score']} "
        f"(WER {best['wer']:.4f})"
    )
    if args.output:
        Path(args.output).write_text(json.dumps(result, indent=2) + "\n")
    return 0


def floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers separated by commas, got {text!r}") from None


class Parser(argparse.ArgumentParser):
    """argparse, with a bad argument as one line (`recog transcribe: error: ...`), not usage + error."""

    def error(self, message: str):
        self.exit(2, f"recog: {self.prog.removeprefix('recog ')}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="recog", description="Speech and handwriting recognition with recurrent CTC models")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

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

    evaluate = commands.add_parser(
        "eval", help="WER/CER of a model on JSONL manifests (speech, ink or line-image corpora)"
    )
    evaluate.add_argument("--model", required=True)
    evaluate.add_argument("manifests", nargs="+")
    evaluate.add_argument("--decoder", choices=["greedy", "beam", "both"], default="both")
    evaluate.add_argument(
        "--group-by",
        help="manifest fields to report per group, first present wins "
        "(default: voice for speech, style for ink, style,font for images)",
    )
    evaluate.add_argument("-o", "--output", help="write the report as JSON")
    evaluate.add_argument(
        "--plots",
        metavar="DIR",
        help="per set DIR/SET/: character confusions and the worst utterances drawn (decodes once more)",
    )
    evaluate.set_defaults(func=cmd_eval)

    transcribe = commands.add_parser(
        "transcribe", help="transcribe audio files, folders, list files or manifests to JSONL (resumable)"
    )
    transcribe.add_argument("--model", required=True, help="checkpoint, e.g. runs/speech/best.pt")
    transcribe.add_argument(
        "paths", nargs="+", help="audio files, folders (recursive), list files (.txt) or JSONL manifests"
    )
    transcribe.add_argument(
        "-o", "--output", type=output_file, help="JSONL output, resumed when it exists (default: stdout)"
    )
    transcribe.add_argument(
        "--format", default="jsonl", help="comma list of jsonl,txt,srt,vtt: per-file files into --out-dir"
    )
    transcribe.add_argument("--out-dir", help="folder for .txt/.srt/.vtt (default: beside -o)")
    add_decoding_options(transcribe)
    transcribe.add_argument(
        "--workers", type=non_negative_int, help="worker processes (default: one per core)"
    )
    transcribe.add_argument(
        "--batch-seconds", type=positive_float, default=120.0, help="padded audio per batch"
    )
    transcribe.add_argument(
        "--chunk-seconds",
        type=positive_float,
        default=30.0,
        help="longer recordings are cut (at pauses) into pieces",
    )
    transcribe.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="model arithmetic; auto: bf16 where the hardware has it (about 2x faster, same WER), else "
        "fp32; a forced bf16 or fp16 the device lacks is refused before any work (fp16: CUDA only)",
    )
    transcribe.add_argument(
        "--device", type=device, default="auto", help="auto (GPU if present), cpu, cuda, cuda:1"
    )
    transcribe.add_argument(
        "--ref",
        help="references for a WER/CER report: a JSONL manifest, or 'txt' for NAME.txt beside each file",
    )
    transcribe.add_argument("--strict", action="store_true", help="exit non-zero if any file failed")
    transcribe.add_argument("--retry-failed", action="store_true", help="on resume, retry files that failed")
    transcribe.add_argument(
        "--shard", type=shard, metavar="RANK/WORLD", help="this machine's share (then: recog merge)"
    )
    transcribe.add_argument("--summary", help="write the run summary as JSON")
    transcribe.add_argument(
        "--engine",
        choices=["torch", "onnx"],
        default="torch",
        help="run the model with PyTorch, or with onnxruntime (CPU, fp32) from its ONNX export",
    )
    transcribe.add_argument(
        "--onnx", help="with --engine onnx: a `recog export` of --model (default: exported to ~/.cache/recog)"
    )
    transcribe.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr"
    )
    transcribe.set_defaults(func=cmd_transcribe)

    export = commands.add_parser(
        "export", help="export a checkpoint's encoder as ONNX (dynamic batch and time)"
    )
    export.add_argument("--model", required=True, help="checkpoint, e.g. runs/speech/best.pt")
    export.add_argument("--out", required=True, help="ONNX file to write, e.g. model.onnx")
    export.set_defaults(func=cmd_export)

    read = commands.add_parser(
        "read",
        help="read handwriting: ink files and line images to JSONL with character positions (resumable)",
    )
    read.add_argument("--model", required=True, help="ink or image checkpoint, e.g. runs/handwriting/best.pt")
    read.add_argument(
        "paths",
        nargs="+",
        help="ink files (.inkml .xml .json) or images (.png .jpg .tif .bmp), folders (recursive)",
    )
    read.add_argument(
        "-o", "--output", type=output_file, help="JSONL output, resumed when it exists (default: stdout)"
    )
    add_decoding_options(read)
    read.add_argument("--batch-size", type=positive_int, default=16, help="files per batch")
    read.add_argument("--workers", type=non_negative_int, help="worker processes (default: one per core)")
    read.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="model arithmetic; auto: bf16 where the hardware has it, else fp32 (fp16: CUDA only)",
    )
    read.add_argument(
        "--device", type=device, default="auto", help="auto (GPU if present), cpu, cuda, cuda:1"
    )
    read.add_argument("--strict", action="store_true", help="exit non-zero if any file failed")
    read.add_argument("--retry-failed", action="store_true", help="on resume, retry files that failed")
    read.add_argument(
        "--shard", type=shard, metavar="RANK/WORLD", help="this machine's share (then: recog merge)"
    )
    read.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="progress bar on stderr"
    )
    read.set_defaults(func=cmd_read)

    serve = commands.add_parser(
        "serve", help="a local web page: upload or record audio, write with a pen or mouse, drop a line image"
    )
    serve.add_argument("--model", required=True, help="a checkpoint of any kind (speech, ink or image)")
    serve.add_argument("--ink-model", help="an ink checkpoint as well")
    serve.add_argument("--image-model", help="a line-image checkpoint as well")
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: this machine only)"
    )
    serve.add_argument("--port", type=non_negative_int, default=8000, help="port (0: any free one)")
    serve.add_argument(
        "--beam", action="store_true", help="beam search with each checkpoint's lexicon and LM"
    )
    serve.add_argument(
        "--device", type=device, default="auto", help="auto (GPU if present), cpu, cuda, cuda:1"
    )
    serve.add_argument("--quiet", action="store_true", help="do not log each request on stderr")
    serve.set_defaults(func=cmd_serve)

    merge = commands.add_parser(
        "merge",
        help="merge the JSONL parts of a sharded transcribe or read; removes only the parts it checked "
        "(ledgers of the same model) and merged",
    )
    merge.add_argument(
        "-o", "--output", type=output_file, required=True, help="merged JSONL (its own lines are kept)"
    )
    merge.add_argument("parts", nargs="+")
    merge.set_defaults(func=cmd_merge)

    align = commands.add_parser(
        "align", help="forced alignment of a known text: word and character times (or ink points, columns)"
    )
    align.add_argument("--model", required=True, help="speech, ink or image checkpoint")
    align.add_argument("input", help="an audio file, ink file or line image")
    align.add_argument("text_file", nargs="?", help="its text (UTF-8), or give --text")
    align.add_argument("--text", help="the text itself instead of a file")
    align.add_argument(
        "--format", choices=["json", "ctm", "srt"], default="json", help="ctm/srt: speech only"
    )
    align.add_argument("-o", "--output", help="write here (default: stdout); an existing file needs --force")
    align.add_argument("--force", action="store_true", help="replace an existing -o file")
    align.add_argument(
        "--words-per-cue", type=non_negative_int, default=0, help="srt: words per cue (0: split at pauses)"
    )
    align.add_argument("--device", type=device, default="cpu", help="cpu, cuda, cuda:1")
    align.set_defaults(func=cmd_align)

    lm = commands.add_parser("lm", help="language models")
    lm_commands = lm.add_subparsers(dest="lm_command", required=True)
    build = lm_commands.add_parser("build", help="build a word or character n-gram LM (modified Kneser-Ney)")
    build.add_argument("texts", nargs="+", help="text files, one sentence per line")
    build.add_argument(
        "-o", "--output", required=True, help="OUT.arpa (ARPA text) or any other name (compact)"
    )
    build.add_argument("--order", type=int, help="n-gram order (default: 3 for words, 6 for characters)")
    build.add_argument("--unit", choices=["word", "char"], default="word")
    build.set_defaults(func=cmd_lm_build)
    tune_lm = lm_commands.add_parser(
        "tune", help="grid-search LM weight, word score and unknown-word score on a dev manifest"
    )
    tune_lm.add_argument("manifest", help="JSONL dev manifest")
    tune_lm.add_argument("--model", required=True)
    tune_lm.add_argument("--lm", help="LM file (ARPA or compact; default: the checkpoint's word LM)")
    tune_lm.add_argument("--lexicon", help="word list or lexicon file (default: the checkpoint's)")
    tune_lm.add_argument("--beam", type=int, default=25)
    tune_lm.add_argument("--lm-weights", type=floats, default=[0.3, 0.5, 0.8, 1.2])
    tune_lm.add_argument("--word-scores", type=floats, default=[-1.0, 0.0, 1.0, 2.0])
    tune_lm.add_argument(
        "--unk-scores",
        type=floats,
        default=list(DecodeConfig().tune_unk_scores),
        help="unknown-word scores to try ('' keeps the decoder's -10)",
    )
    tune_lm.add_argument("--workers", type=int, default=1, help="decoding threads")
    tune_lm.add_argument("-o", "--output", help="write the grid as JSON")
    tune_lm.set_defaults(func=cmd_lm_tune)
    from recog.datasets.importers.cli import add_parser as add_data_parser

    add_data_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "leading_paths", None):
        args.paths = [*args.leading_paths, *args.paths]
    try:
        return args.func(args)
    except StreamError as error:  # stdout is full or closed: say so once, and write nothing more there
        print(f"recog: {error}", file=sys.stderr)
        silence_stdout()
        return 2
    except (
        ConfigError,
        CheckpointError,
        ManifestError,
        AudioError,
        CorpusError,
        PrecisionError,
        JobError,
    ) as error:
        print(f"recog: {type(error).__name__}: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("recog: interrupted", file=sys.stderr)
        return 130


def silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's last flush does not fail a second time."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


if __name__ == "__main__":
    sys.exit(main())
