"""`recog read`: ink files and line images -> one JSONL line per file, with where each character is.

Files are picked by extension (folders recursively), sorted by size and read in batches by worker
processes that also run the model and decode. Each line has `path`, `text`, `confidence`, `chars` and
`words` with their positions, `points` (ink) or `width`/`height` (images), and `error` (null when it
worked). A character's position is the range of input it covers: for ink the points [start, end) in
document order (all strokes, as in the file), for images the pixel columns [start, end) of the
original image. Characters are aligned to the model's frames by CTC forced alignment of the decoded
text, and the boundary between two characters is the middle of the blank frames between them. recog's
beam decoder spells a word outside its lexicon, so it is placed like any other.

Output, resume, shards (--shard RANK/WORLD or torchrun), order and progress are the job layer's
(`recog.jobs`), as for `recog transcribe`: every finished file is appended and flushed, a torn last
line is cut off on restart, and a finished run is rewritten once in input order. A batch is decoded
in one decoder call; a batch that fails as a whole is retried one file at a time.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from recog.decode.align import align, words_of  # noqa: F401  (re-exported: read's API)
from recog.decode.transcript import Transcript
from recog.jobs import JobError, JobOptions, check_task, isolated, model_tag, run_job, walk
from recog.jobs.checks import check_numbers
from recog.modalities import kind_of
from recog.precision import resolve_precision
from recog.transcribe.batches import batch_loader


class ReadError(JobError):
    """A problem with the run as a whole (no readable files, wrong kind of model), not with one file."""


@dataclass
class ReadOptions:
    output: str | None = None  # the JSONL file, also the record that makes a rerun resume
    decoder: str = "beam"  # beam (with the checkpoint's LM and lexicon) | greedy
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA) | auto
    batch_size: int = 16  # files per batch
    workers: int | None = None  # worker processes; None: one per core, 0: all in this process
    retry_failed: bool = False  # on resume, try again the files whose line has an error
    shard: tuple[int, int] | None = None  # (rank, world); None: from torchrun's environment
    progress: bool | None = None  # None: when stderr is a terminal
    stream: object = None  # where lines go without an output file (the CLI passes stdout)


@dataclass
class ReadSummary:
    files: int = 0
    resumed: int = 0  # already in the output
    read: int = 0  # this run, failures included
    failed: int = 0  # lines with an error, resumed ones included
    wall_seconds: float = 0.0

    def line(self) -> str:
        return (
            f"{self.files} files ({self.resumed} already done, {self.failed} failed), "
            f"{self.read} read in {self.wall_seconds:.1f} s"
        )


# ---------------------------------------------------------------- inputs
def collect_files(paths: list[str], suffixes) -> list[str]:
    """Files as given, and inside folders (recursively, cycle-safe) the files this model reads, each
    once, in order. A named file of another kind still becomes an input: its line tells what is wrong."""
    found: dict[str, None] = {}
    for given in paths:
        if Path(given).is_dir():
            found.update(dict.fromkeys(walk(given, suffixes)))
        else:
            found.setdefault(given)
    return list(found)


def load_input(recognizer, path: str) -> tuple[torch.Tensor, np.ndarray, dict]:
    """(frames, per frame its place in the input, facts for the record); InkError/ImageError if unusable."""
    modality, suffix = recognizer.modality, Path(path).suffix.lower()
    if suffix not in modality.suffixes:
        other = kind_of(path)
        what = f"{other.kind} ({suffix})" if other else f"not a file recog reads ({suffix or 'no extension'})"
        raise modality.error(f"{path}: {what}, and this model reads {modality.name}")
    located = modality.locate(path)
    return recognizer.cmvn(located.frames), located.places, located.facts


# ---------------------------------------------------------------- where each character is
def char_positions(
    log_probs: torch.Tensor,
    text: str,
    vocab,
    stack: int,
    places: np.ndarray,
    extent: tuple,
    modality,
) -> list[dict]:
    """Each character of `text` with the input range it covers and its confidence. Characters the
    model cannot write have no position."""
    unplaced = {index for index, char in enumerate(text) if vocab.unknown_chars(char)}
    known = [index for index in range(len(text)) if index not in unplaced]
    chars: list[dict] = [{"char": char, "start": None, "end": None, "confidence": None} for char in text]
    if not known:
        return chars
    labels = vocab.encode("".join(text[index] for index in known))
    scores = log_probs.numpy()
    spans = align(scores, labels)
    frames = len(scores)
    if spans is None:  # cannot happen for decoder output; spread the characters evenly
        edges = np.linspace(0, frames, len(labels) + 1)
        spans = [(int(a), max(int(a), int(b) - 1)) for a, b in zip(edges[:-1], edges[1:], strict=True)]
    cuts = [0.0] + [
        (last + 1 + following[0]) / 2 for (_, last), following in zip(spans, spans[1:], strict=False)
    ]
    cuts.append(float(frames))
    bounds = [modality.to_input(cut * stack, places, extent) for cut in cuts]
    bounds[0], bounds[-1] = extent[0], extent[1]
    bounds = np.maximum.accumulate(np.asarray(bounds, dtype=np.int64)).tolist()
    for number, (index, label, (first, last)) in enumerate(zip(known, labels, spans, strict=True)):
        confidence = float(np.exp(scores[first : last + 1, label].max()))
        chars[index].update(start=bounds[number], end=bounds[number + 1], confidence=round(confidence, 4))
    return chars


def record_for(path: str, transcript, log_probs: torch.Tensor, recognizer, places, facts) -> dict:
    chars = char_positions(
        log_probs,
        transcript.text,
        recognizer.vocab,
        recognizer.model.config.stack,
        places,
        facts["extent"],
        recognizer.modality,
    )
    placed = [c["confidence"] for c in chars if c["confidence"] is not None]
    if placed:
        confidence = sum(placed) / len(placed)
    else:  # nothing written: how sure the model is of that
        confidence = float(log_probs[:, 0].exp().mean()) if len(log_probs) else 0.0
    extra = {k: v for k, v in facts.items() if k != "extent"}
    return {
        "path": path,
        "text": transcript.text,
        "confidence": round(confidence, 4),
        **extra,
        "chars": chars,
        "words": words_of(chars),
        **({"nbest": transcript.alternatives} if transcript.alternatives else {}),
        "error": None,
    }


def failure(path: str, error: str) -> dict:
    return {"path": path, "text": None, "confidence": None, "chars": [], "words": [], "error": error}


# ---------------------------------------------------------------- batches in worker processes
class BatchReader(torch.utils.data.Dataset):
    """Batch number -> [(file number, record)]: files read, turned into frames, run through the model
    and decoded in one decoder call; a file that fails gets an error record and the rest of the batch
    goes on (a batch that fails as a whole is run again one file at a time)."""

    def __init__(self, recognizer, files: list[str], batches: list[list[int]], options: ReadOptions):
        self.recognizer, self.files, self.batches, self.options = recognizer, files, batches, options

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, number: int) -> list[tuple[int, dict]]:
        recognizer, done, ready = self.recognizer, [], []
        for index in self.batches[number]:
            path = self.files[index]
            try:
                ready.append([index, *load_input(recognizer, path), None, None])
            except recognizer.modality.error as error:
                done.append((index, failure(path, str(error))))
            except Exception as error:  # a library failing on one odd file must not stop the batch
                done.append((index, failure(path, f"{path}: {type(error).__name__}: {error}")))
        if not ready:
            return done
        failed: dict[int, str] = {}

        def run(batch: list[list]) -> None:  # each item: [index, frames, places, facts, log-probs, text]
            log_probs = recognizer.forward([item[1] for item in batch], self.options.precision)
            decodable = []
            for item, scores in zip(batch, log_probs, strict=True):
                item[4], item[5] = scores, Transcript("")  # shorter than one output frame: nothing to read
                if scores.shape[0]:
                    decodable.append(item)
            transcripts = recognizer.decode([item[4] for item in decodable], self.options.decoder)
            for item, transcript in zip(decodable, transcripts, strict=True):
                item[5] = transcript

        def fail(item: list, error: BaseException) -> None:
            failed[item[0]] = f"{self.files[item[0]]}: {type(error).__name__}: {error}"

        isolated(ready, run, fail)
        for index, _, places, facts, scores, transcript in ready:
            path = self.files[index]
            if index in failed:
                done.append((index, failure(path, failed[index])))
                continue
            try:
                record = record_for(path, transcript, scores, recognizer, places, facts)
                done.append((index, record))
            except Exception as error:
                done.append((index, failure(path, f"{path}: {type(error).__name__}: {error}")))
        return done


def plan(files: list[str], todo: list[int], batch_size: int) -> list[list[int]]:
    """Batches of similar size (by file size, largest first) so padding stays small."""

    def size(index: int) -> int:
        try:
            return os.path.getsize(files[index])
        except OSError:
            return 0

    ordered = sorted(todo, key=lambda index: (-size(index), index))
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), max(1, batch_size))]


def run(recognizer, paths: list[str], options: ReadOptions) -> ReadSummary:
    """Read everything in `paths` that the output does not have yet; see the module docstring."""
    started = time.perf_counter()
    options = dataclasses.replace(options, precision=resolve_precision(options.precision, recognizer.device))
    check_task(recognizer, "recog read", error=ReadError)
    if options.decoder not in ("greedy", "beam"):
        raise ReadError(f"unknown decoder {options.decoder!r}: expected greedy or beam")
    check_numbers(batch_size=options.batch_size)
    if options.workers is not None and options.workers < 0:
        raise ReadError(f"workers must be 0 or more, got {options.workers}")
    files = collect_files(paths, recognizer.modality.suffixes)
    if not files:
        raise ReadError(f"no {' '.join(recognizer.modality.suffixes)} files in {' '.join(paths)}")

    def process(todo: list[int], emit) -> None:
        batches = plan(files, todo, options.batch_size)
        if options.decoder == "beam":
            recognizer.decoder("beam")  # the LM loaded and recog's kernels compiled once, before workers fork
        workers = len(os.sched_getaffinity(0)) if options.workers is None else options.workers
        if torch.device(recognizer.device).type != "cpu":
            workers = 0  # a GPU model runs in this process (forked workers cannot use CUDA)
        workers = min(workers, len(batches))
        try:
            for batch in batch_loader(BatchReader(recognizer, files, batches, options), workers):
                for index, record in batch:
                    emit(index, record)
        finally:
            gc.unfreeze()  # batch_loader froze the heap for the workers

    job = JobOptions(
        output=options.output,
        retry_failed=options.retry_failed,
        shard=options.shard,
        progress=options.progress,
        stream=options.stream,
    )
    result = run_job(
        files,
        process,
        job,
        model_tag(recognizer),
        failure=failure,
        postfix=lambda r: f"{r.failed} failed",
        model_label=recognizer.checkpoint,
    )
    return ReadSummary(
        files=result.files,
        resumed=result.resumed,
        read=result.processed,
        failed=result.failed,
        wall_seconds=time.perf_counter() - started,
    )
