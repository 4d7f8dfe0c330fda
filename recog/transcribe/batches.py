"""Planning and the worker side: pieces (long recordings cut into chunks) sorted by duration and
batched by padded length; a batch read, resampled, turned into frames and, in CPU workers, run
through the model and decoded.

Memory stays flat however many files a run has. The plan that forked workers inherit is a few flat
arrays, not a Python object per file: reading it touches no page of the parent's heap, so none is
copied into a worker. And each batch has its own (batch, time) shape, for which oneDNN compiles an
LSTM primitive and by default keeps up to 1,024 of them (about 0.5 MB each): a worker grew with every
batch it ran, so its cache is bounded (`bound_primitive_cache`). What remains is glibc's heap keeping
the high-water mark of the batches' large, differently sized tensors (one worker swings between
about 650 and 750 MB); a fixed mmap threshold (mallopt) flattens that but cost 10-15% more CPU
time in `make bench-transcribe`, so it is not set."""

from __future__ import annotations

import gc
import math
import os
import time
from dataclasses import dataclass

import numpy as np
import torch

from recog.audio import AudioError, find_pause, read_audio, read_region, resample
from recog.decode.transcript import Transcript
from recog.jobs import isolated
from recog.transcribe.options import Options

PAUSE_CONTEXT = 0.1  # seconds kept either side of a cut in a pause (the pause is at least 0.2 s)
PRIMITIVE_CACHE = "16"  # oneDNN primitives kept per process: a batch's layers need a few


@dataclass(frozen=True)
class Piece:
    index: int  # source number
    duration: float  # of the whole recording, seconds
    part: int = 0
    parts: int = 1


@dataclass
class Result:
    piece: Piece
    offset: float = 0.0  # where the piece starts in the recording, seconds
    keep: tuple[float, float] = (-math.inf, math.inf)  # word midpoints this piece answers for
    seconds: float | None = None  # length of a whole file as read, at the model's rate
    frames: torch.Tensor | None = None
    transcript: Transcript | None = None
    error: str | None = None


PIECE = np.dtype([("index", np.int64), ("duration", np.float64), ("part", np.int32), ("parts", np.int32)])


class Plan:
    """The batches as flat arrays: pieces in batch order, where each batch starts, and the paths of the
    sources as one encoded blob with offsets."""

    def __init__(self, pieces: np.ndarray, starts: np.ndarray, paths: list[str]):
        self.pieces, self.starts = pieces, starts  # (pieces,) of PIECE; (batches + 1,) int64
        encoded = [os.fsencode(path) for path in paths]
        self.blob = b"".join(encoded)
        self.ends = np.cumsum([len(path) for path in encoded], dtype=np.int64)

    def __len__(self) -> int:
        return len(self.starts) - 1

    def batch(self, number: int) -> list[Piece]:
        rows = self.pieces[self.starts[number] : self.starts[number + 1]].tolist()
        return [
            Piece(int(index), float(duration), int(part), int(parts)) for index, duration, part, parts in rows
        ]

    def path(self, index: int) -> str:
        start = int(self.ends[index - 1]) if index else 0
        return os.fsdecode(self.blob[start : int(self.ends[index])])


def plan(durations: dict[int, float], paths: list[str], options: Options) -> Plan:
    """Pieces (long recordings cut into chunks) sorted longest first, batched by padded length."""
    rows = []
    for index, duration in durations.items():
        parts = math.ceil(duration / options.chunk_seconds) if duration > options.chunk_seconds else 1
        cost = duration / parts + (2 * options.overlap_seconds if parts > 1 else 0.0)
        rows += [(cost, index, duration, part, parts) for part in range(parts)]
    rows.sort(key=lambda row: (-row[0], row[1], row[3]))
    starts, size = [0], 0
    for number in range(len(rows)):
        if size and rows[starts[-1]][0] * (size + 1) > options.batch_seconds:
            starts.append(number)
            size = 0
        size += 1
    starts.append(len(rows))
    if not rows:
        starts = [0]
    pieces = np.array([row[1:] for row in rows], dtype=PIECE) if rows else np.zeros(0, PIECE)
    return Plan(pieces, np.array(starts, dtype=np.int64), paths)


class BatchReader(torch.utils.data.Dataset):
    """Batch number -> (results, CPU seconds per stage): every piece read, resampled and turned into
    frames; with `decode`, also run through the model and decoded (CPU workers)."""

    def __init__(self, recognizer, plan: Plan, options: Options):
        self.recognizer, self.plan, self.options = recognizer, plan, options
        on_cpu = torch.device(recognizer.device).type == "cpu"
        self.decode = on_cpu if options.model_in_workers is None else options.model_in_workers

    def __len__(self) -> int:
        return len(self.plan)

    def __getitem__(self, number: int) -> tuple[list[Result], dict[str, float]]:
        seconds = dict.fromkeys(("read", "features", "model", "decode"), 0.0)
        results = []
        for piece in self.plan.batch(number):
            result, clock = Result(piece), time.process_time()
            try:
                samples = self.load(result)
                seconds["read"] += time.process_time() - clock
                clock = time.process_time()
                result.frames = self.recognizer.frames(samples)
                seconds["features"] += time.process_time() - clock
            except AudioError as error:
                result.error = str(error)
            except Exception as error:  # a library failing on one odd file must not stop the batch
                result.error = f"{self.plan.path(piece.index)}: {type(error).__name__}: {error}"
            results.append(result)
        if self.decode:
            transcribe_pieces(self.recognizer, results, self.options, seconds, self.plan.path)
        return results, seconds

    def load(self, result: Result):
        """Samples of one piece at the model's rate; for a chunk, also where it sits in the recording."""
        piece, options = result.piece, self.options
        path, rate = self.plan.path(piece.index), self.recognizer.features.config.sample_rate
        if piece.parts == 1:
            samples = read_audio(path, rate)
            result.seconds = len(samples) / rate
            return samples
        bounds = [k * piece.duration / piece.parts for k in range(piece.parts + 1)]
        left, left_pause = self.cut(path, bounds[piece.part]) if piece.part else (0.0, True)
        last = piece.part == piece.parts - 1
        right, right_pause = (piece.duration, True) if last else self.cut(path, bounds[piece.part + 1])
        start = left - (PAUSE_CONTEXT if left_pause else options.overlap_seconds)
        stop = right + (PAUSE_CONTEXT if right_pause else options.overlap_seconds)
        samples, native, first = read_region(path, max(0.0, start), stop)
        result.offset = first / native
        result.keep = (left if piece.part else -math.inf, math.inf if last else right)
        return resample(samples, native, rate)

    def cut(self, path: str, nominal: float) -> tuple[float, bool]:
        """Where to cut near `nominal` seconds: the quietest spot within a few seconds, and whether it
        is a pause. Both neighbouring chunks compute it from the same samples, so they agree."""
        search = min(5.0, self.options.chunk_seconds / 4)
        samples, native, first = read_region(path, max(0.0, nominal - search), nominal + search)
        centre, pause = find_pause(samples, native)
        return first / native + centre, pause


def transcribe_pieces(recognizer, results: list[Result], options: Options, seconds: dict, path_of) -> None:
    """Model and decoder over the readable pieces of one batch (in a worker, or in the main process).
    When the batch as a whole fails (MemoryError, or any error from the model on the padded batch), each
    piece runs alone and only a piece that still fails gets the error (`path_of`: index -> path)."""
    readable = [result for result in results if result.error is None]
    if not readable:
        return

    def run(batch: list[Result]) -> None:
        clock = time.process_time()
        log_probs = recognizer.forward([result.frames for result in batch], options.precision)
        seconds["model"] += time.process_time() - clock
        clock = time.process_time()
        decodable = []
        for result, item in zip(batch, log_probs, strict=True):
            if item.shape[0] == 0:  # shorter than one output frame
                result.transcript = Transcript("")
            else:
                decodable.append((result, item))
        transcripts = recognizer.decode([item for _, item in decodable], options.decoder)  # one call
        for (result, _), transcript in zip(decodable, transcripts, strict=True):
            result.transcript = transcript
        seconds["decode"] += time.process_time() - clock

    def fail(result: Result, error: BaseException) -> None:
        result.transcript = None
        result.error = f"{path_of(result.piece.index)}: {type(error).__name__}: {error}"

    isolated(readable, run, fail)
    for result in readable:
        result.frames = None


def bound_primitive_cache() -> None:
    """Keep a few oneDNN primitives, not 1,024: every batch has a new shape, so a full cache is only
    memory. oneDNN reads this when a process first runs a primitive; a value the user set is kept."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", PRIMITIVE_CACHE)


def worker_init(_: int) -> None:
    torch.set_num_threads(1)  # torch ops in forked workers deadlock on a multi-threaded pool
    bound_primitive_cache()


def as_is(batch):
    return batch


def batch_loader(dataset: torch.utils.data.Dataset, workers: int) -> torch.utils.data.DataLoader:
    """Whole batches from `workers` forked processes (in this process when 0), in completion order.

    Bounds oneDNN's primitive cache here and in every worker, and freezes the objects made so far
    out of the garbage collector: a worker's scans would write to (and so copy) every page of the
    parent's heap that holds one; the caller calls `gc.unfreeze()` when the loader is done."""
    bound_primitive_cache()
    if workers:
        gc.freeze()
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        collate_fn=as_is,
        worker_init_fn=worker_init if workers else None,
        multiprocessing_context="fork" if workers else None,
        prefetch_factor=2 if workers else None,
        in_order=False,
    )
