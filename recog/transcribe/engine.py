"""The run: which files are left to do, the workers' batches handed to the writer as each file's
pieces come in, ranks and their merge, and the WER/CER report (kept as running totals)."""

from __future__ import annotations

import dataclasses
import gc
import json
import os
import sys
import time
from pathlib import Path

import torch

from recog.audio import AudioError, probe_audio
from recog.decode.transcript import FileTranscript, stitch
from recog.metrics import ErrorRate
from recog.precision import resolve_precision
from recog.transcribe.batches import (
    BatchReader,
    Result,
    batch_loader,
    bound_primitive_cache,
    file_progress,
    plan,
    transcribe_pieces,
)
from recog.transcribe.inputs import (
    Source,
    attach_references,
    check_outputs_spare_references,
    collect_sources,
    normalise,
)
from recog.transcribe.ledger import Ledger, iter_records, merge, part_path, write_outputs
from recog.transcribe.options import FORMATS, Options, Summary, TranscribeError


def default_device() -> str:
    """The GPU of this rank when there is one (torchrun sets LOCAL_RANK), else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


def shard_of(options: Options) -> tuple[int, int, bool]:
    """(rank, world, under torchrun)."""
    if options.shard is not None:
        return options.shard[0], options.shard[1], False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


class Scores:
    """WER/CER over the files that have a reference and a transcript, as running totals (failed files
    are counted apart): nothing per file is kept."""

    def __init__(self, vocab):
        self.rate, self.failed, self.chars = ErrorRate(), 0, set(vocab.chars)

    def add(self, reference: str, text: str | None, error: str | None) -> None:
        if error:
            self.failed += 1
        else:
            self.rate.add(normalise(reference, self.chars), text or "")

    def result(self) -> dict | None:
        if not self.rate.utterances and not self.failed:
            return None
        return {**self.rate.as_dict(), "failed_with_reference": self.failed}


class Writer:
    """Where each finished file goes: per-file outputs, then its line (ledger file, or a stream in
    input order, or kept for the Python API), and the running totals."""

    def __init__(self, sources, todo, options: Options, ledger: Ledger | None, summary: Summary, scores):
        self.sources, self.options, self.ledger, self.summary, self.scores = (
            sources,
            options,
            ledger,
            summary,
            scores,
        )
        self.formats = tuple(kind for kind in options.formats if kind != "jsonl")
        self.out_dir = output_folder(options)
        self.stream_order, self.stream_next, self.waiting = todo, 0, {}
        self.collected: dict[int, FileTranscript] = {}
        self.emitted: set[int] = set()

    def emit(self, index: int, transcript: FileTranscript) -> None:
        source, options = self.sources[index], self.options
        transcript.path = source.path
        if transcript.error is None and self.formats:
            write_outputs(transcript, source.name, self.formats, self.out_dir)
        record = transcript.record()
        if self.ledger is not None:
            self.ledger.append(record)
        elif options.stream is not None:  # nothing to resume from: keep input order for the reader
            self.waiting[index] = record
            order = self.stream_order
            while self.stream_next < len(order) and order[self.stream_next] in self.waiting:
                options.stream.write(json.dumps(self.waiting.pop(order[self.stream_next])) + "\n")
                options.stream.flush()
                self.stream_next += 1
        if options.collect:
            self.collected[index] = transcript
        if source.reference is not None:
            self.scores.add(source.reference, record["text"], record["error"])
        self.emitted.add(index)
        self.summary.transcribed += 1
        self.summary.failed += transcript.error is not None
        self.summary.audio_seconds += transcript.duration or 0.0


def output_folder(options: Options) -> Path:
    """Where per-file outputs go: --out-dir, else beside the JSONL output, else here."""
    return Path(options.out_dir or (Path(options.output).parent if options.output else "."))


def run(recognizer, paths: list[str], options: Options) -> Summary:
    """Transcribe everything in `paths` that the output does not have yet; see the package docstring."""
    started = time.perf_counter()
    for kind in options.formats:
        if kind not in FORMATS:
            raise TranscribeError(f"unknown output format {kind!r}: expected some of {', '.join(FORMATS)}")
    if options.decoder not in ("greedy", "beam"):
        raise TranscribeError(f"unknown decoder {options.decoder!r}: expected greedy or beam")
    options = dataclasses.replace(options, precision=resolve_precision(options.precision, recognizer.device))
    bound_primitive_cache()  # before this process (or a worker forked from it) runs the model
    sources = collect_sources(paths)
    if not sources:
        raise TranscribeError(f"no audio files in {' '.join(paths)}")
    attach_references(sources, options.references)
    if options.references in ("txt", ".txt"):
        check_outputs_spare_references(sources, options.formats, output_folder(options))
    rank, world, torchrun = shard_of(options)
    if world > 1 and not options.output:
        raise TranscribeError("several ranks need an output file (-o) to write their parts to")
    mine = [index for index in range(len(sources)) if index % world == rank]
    summary = Summary(files=len(mine))

    output = Path(options.output) if options.output else None
    ledger, files = None, []
    if output is not None:
        target = part_path(output, rank, world) if world > 1 else output
        files = [target, output] if world > 1 else [output]  # what this rank's share is read back from
        ledger = Ledger(target, options.retry_failed, [output] if world > 1 else [])
        if ledger.repaired:
            print(f"recog: {target}: cut off a torn last line left by an interrupted run", file=sys.stderr)
    done = ledger.done if ledger else {}
    previous = [done[sources[index].path] for index in mine if sources[index].path in done]
    summary.resumed, summary.failed = len(previous), sum(bool(error) for _, error in previous)
    scores = Scores(recognizer.vocab)
    score_resumed(sources, mine, done, scores)
    todo = [index for index in mine if sources[index].path not in done]
    writer = Writer(sources, todo, options, ledger, summary, scores)
    try:
        transcribe_sources(recognizer, sources, todo, options, writer, started)
    finally:
        if ledger is not None:
            ledger.close()

    order = [source.path for source in sources]
    if output is not None and torchrun:
        finish_ranks(output, rank, world, order)
    elif output is not None and world == 1:
        merge(output, [], order)  # complete: rewritten once in input order
    summary.wall_seconds = time.perf_counter() - started
    summary.scores = scores.result()
    if options.collect:  # the Python API: every file's transcript, resumed ones from the output
        collected = writer.collected
        wanted = {sources[index].path: index for index in mine if index not in collected}
        for path in files if wanted else []:
            for record in iter_records(path):
                index = wanted.pop(record["path"], None)
                if index is not None:
                    collected[index] = FileTranscript.from_record(record)
        summary.transcripts = [collected[index] for index in mine if index in collected]
    return summary


def score_resumed(sources: list[Source], mine: list[int], done: dict, scores: Scores) -> None:
    """Add the files with a reference that an earlier run finished (their lines are in the output)."""
    for index in mine:
        source = sources[index]
        if source.reference is not None and source.path in done:
            scores.add(source.reference, *done[source.path])


def transcribe_sources(recognizer, sources, todo, options: Options, writer: Writer, started: float) -> None:
    """Probe, plan, then run the batches through the workers and hand every file to the writer."""
    durations = {}
    for index in todo:  # headers only: bad files are answered at once, the rest sorted by duration
        try:
            durations[index] = probe_audio(sources[index].path).duration
        except AudioError as error:
            writer.emit(index, FileTranscript("", error=str(error)))
    batches = plan(durations, [source.path for source in sources], options)
    probed = len(durations)
    del durations
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: the cores are shared
    cores = max(1, len(os.sched_getaffinity(0)) // ranks_here)
    workers = cores if options.workers is None else options.workers
    workers = min(workers, len(batches))
    if options.decoder == "beam":
        recognizer.decoder("beam")  # the LM loaded and recog's kernels compiled once, before the workers fork
    reader = BatchReader(recognizer, batches, options)
    loader = batch_loader(reader, workers)
    progress = file_progress(len(todo), len(todo) - probed, options.progress)
    pending: dict[int, list[Result]] = {}
    summary = writer.summary
    summary.seconds = dict.fromkeys(("read", "features", "model", "decode"), 0.0)
    try:
        for batch, seconds in loader:
            if not reader.decode:
                transcribe_pieces(recognizer, batch, options, seconds)
            for stage, value in seconds.items():
                summary.seconds[stage] = round(summary.seconds[stage] + value, 3)
            for result in batch:
                transcript = assemble(result, pending, writer.emitted)
                if transcript is None:
                    continue
                writer.emit(result.piece.index, transcript)
                progress.update(1)
                wall = time.perf_counter() - started
                rtf = wall / summary.audio_seconds if summary.audio_seconds else 0.0
                progress.set_postfix_str(f"{summary.audio_seconds / 3600:.2f} h audio, RTF {rtf:.4f}")
    finally:
        gc.unfreeze()  # batch_loader froze the heap for the workers
        progress.close()


def assemble(result: Result, pending: dict[int, list[Result]], emitted: set[int]) -> FileTranscript | None:
    """A file's transcript once all its pieces are in (or at its first failed piece), else None."""
    piece = result.piece
    if piece.index in emitted:
        return None  # another piece of this file failed already
    if result.error is not None:
        pending.pop(piece.index, None)
        return FileTranscript("", duration=piece.duration, error=result.error)
    parts = pending.setdefault(piece.index, [])
    parts.append(result)
    if len(parts) < piece.parts:
        return None
    del pending[piece.index]
    if piece.parts == 1:
        joined, duration = result.transcript, result.seconds
    else:
        parts.sort(key=lambda item: item.piece.part)
        joined = stitch([(item.transcript, item.offset, *item.keep) for item in parts])
        duration = piece.duration
    return FileTranscript(joined.text, joined.score, joined.words, duration=duration)


def finish_ranks(output: Path, rank: int, world: int, order: list[str]) -> None:
    """Under torchrun: wait for every rank, then rank 0 merges the parts into the output."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    if rank == 0:
        merge(output, [part_path(output, r, world) for r in range(world)], order)
    dist.barrier()
    dist.destroy_process_group()
