"""The transcription app on the job layer (`recog.jobs`): audio sources in, pieces planned and run
through the workers, each file's transcript assembled from its pieces and handed to the job, which
owns the ledger, resume, shards, order and progress. Also the per-file outputs and the WER/CER
report (kept as running totals)."""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from pathlib import Path

import torch

from recog.audio import AudioError, probe_audio
from recog.decode.transcript import FileTranscript, stitch
from recog.jobs import JobOptions, check_task, model_tag, run_job
from recog.jobs.checks import check_numbers
from recog.metrics import ErrorRate
from recog.precision import resolve_precision
from recog.transcribe.batches import (
    BatchReader,
    Result,
    batch_loader,
    bound_primitive_cache,
    plan,
    transcribe_pieces,
)
from recog.transcribe.inputs import (
    attach_references,
    check_outputs_spare_references,
    collect_sources,
    normalise,
)
from recog.transcribe.ledger import write_outputs
from recog.transcribe.options import FORMATS, Options, Summary, TranscribeError


def default_device() -> str:
    """The GPU of this rank when there is one (torchrun sets LOCAL_RANK), else the CPU."""
    if not torch.cuda.is_available():
        return "cpu"
    return f"cuda:{int(os.environ.get('LOCAL_RANK', '0')) % torch.cuda.device_count()}"


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
    check_numbers(batch_seconds=options.batch_seconds, chunk_seconds=options.chunk_seconds)
    if options.overlap_seconds < 0 or (options.workers is not None and options.workers < 0):
        raise TranscribeError("overlap_seconds and workers must be 0 or more")
    options = dataclasses.replace(options, precision=resolve_precision(options.precision, recognizer.device))
    check_task(recognizer, "recog transcribe", error=TranscribeError)
    bound_primitive_cache()  # before this process (or a worker forked from it) runs the model
    sources = collect_sources(paths)
    if not sources:
        raise TranscribeError(f"no audio files in {' '.join(paths)}")
    attach_references(sources, options.references)
    if options.references in ("txt", ".txt"):
        check_outputs_spare_references(sources, options.formats, output_folder(options))
    summary, scores = Summary(), Scores(recognizer.vocab)
    formats = tuple(kind for kind in options.formats if kind != "jsonl")
    collected: dict[int, FileTranscript] = {}

    def finish(emit, index: int, transcript: FileTranscript) -> None:
        """A file's transcript: its per-file outputs, then its line."""
        source = sources[index]
        transcript.path = source.path
        if transcript.error is None and formats:
            write_outputs(transcript, source.name, formats, output_folder(options))
        if options.collect:
            collected[index] = transcript
        emit(index, transcript.record())

    def counted(index: int, record: dict) -> None:
        if sources[index].reference is not None:
            scores.add(sources[index].reference, record["text"], record["error"])
        summary.audio_seconds += record.get("duration") or 0.0

    def resumed(index: int, text: str | None, error: str | None) -> None:
        if sources[index].reference is not None:
            scores.add(sources[index].reference, text, error)

    def postfix(_) -> str:
        wall = time.perf_counter() - started
        rtf = wall / summary.audio_seconds if summary.audio_seconds else 0.0
        return f"{summary.audio_seconds / 3600:.2f} h audio, RTF {rtf:.4f}"

    def process(todo: list[int], emit) -> None:
        transcribe_sources(recognizer, sources, todo, options, lambda i, t: finish(emit, i, t), summary)

    job = JobOptions(
        output=options.output,
        retry_failed=options.retry_failed,
        shard=options.shard,
        progress=options.progress,
        stream=options.stream,
        collect=options.collect,
    )
    result = run_job(
        [source.path for source in sources],
        process,
        job,
        model_tag(recognizer),
        failure=lambda path, error: FileTranscript("", path=path, error=error).record(),
        on_record=counted,
        on_resumed=resumed,
        postfix=postfix,
        model_label=recognizer.checkpoint,
    )
    summary.files, summary.resumed = result.files, result.resumed
    summary.transcribed, summary.failed = result.processed, result.failed
    summary.wall_seconds = time.perf_counter() - started
    summary.scores = scores.result()
    if options.collect:  # the Python API: every file's transcript, resumed ones from the output
        records = result.records
        summary.transcripts = [
            collected[index] if index in collected else FileTranscript.from_record(records[index])
            for index in sorted(records)
        ]
    return summary


def transcribe_sources(recognizer, sources, todo, options: Options, finish, summary: Summary) -> None:
    """Probe, plan, then run the batches through the workers and hand every file to the writer."""
    durations = {}
    for index in todo:  # headers only: bad files are answered at once, the rest sorted by duration
        try:
            durations[index] = probe_audio(sources[index].path).duration
        except AudioError as error:
            finish(index, FileTranscript("", error=str(error)))
    batches = plan(durations, [source.path for source in sources], options)
    del durations
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: the cores are shared
    cores = max(1, len(os.sched_getaffinity(0)) // ranks_here)
    workers = cores if options.workers is None else options.workers
    workers = min(workers, len(batches))
    if options.decoder == "beam":
        recognizer.decoder("beam")  # the LM loaded and recog's kernels compiled once, before the workers fork
    reader = BatchReader(recognizer, batches, options)
    loader = batch_loader(reader, workers)
    pending: dict[int, list[Result]] = {}
    emitted: set[int] = set()
    summary.seconds = dict.fromkeys(("read", "features", "model", "decode"), 0.0)
    try:
        for batch, seconds in loader:
            if not reader.decode:
                transcribe_pieces(recognizer, batch, options, seconds, reader.plan.path)
            for stage, value in seconds.items():
                summary.seconds[stage] = round(summary.seconds[stage] + value, 3)
            for result in batch:
                transcript = assemble(result, pending, emitted)
                if transcript is None:
                    continue
                emitted.add(result.piece.index)
                finish(result.piece.index, transcript)
    finally:
        gc.unfreeze()  # batch_loader froze the heap for the workers


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
    # n-best lists belong to one decoding: a recording decoded in pieces has none
    alternatives = joined.alternatives if piece.parts == 1 else []
    return FileTranscript(
        joined.text, joined.score, joined.words, duration=duration, alternatives=alternatives
    )
