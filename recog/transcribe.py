"""Batch transcription: files, folders, list files and manifests -> one JSONL line per audio file.

Fast: headers are probed (cheap), pieces sorted by duration and batched by padded length; worker
processes read, resample, compute features, run the model and decode (on a GPU the model runs in the
main process). Long recordings are cut at pauses, or with overlap where there is none, and stitched
back. Resumable and lossless: the output JSONL is the record of finished files (append + flush per
line, a torn last line cut off on restart), every input gets exactly one line, and a finished run is
rewritten once in input order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from recog.audio import AudioError, find_pause, probe_audio, read_audio, read_region, resample
from recog.decode.transcript import FileTranscript, Transcript, stitch, to_srt, to_vtt
from recog.metrics import ErrorRate

AUDIO_SUFFIXES = frozenset(
    ".wav .wave .flac .ogg .oga .opus .mp3 .aif .aiff .aifc .au .snd .caf .w64 .rf64 .sph .voc".split()
)
LIST_SUFFIXES = frozenset({".txt", ".lst", ".list", ".scp"})
FORMATS = ("jsonl", "txt", "srt", "vtt")
PAUSE_CONTEXT = 0.1  # seconds kept either side of a cut in a pause (the pause is at least 0.2 s)


class TranscribeError(Exception):
    """A problem with the run as a whole (an option, a list file), not with one audio file."""


@dataclass
class Options:
    output: str | None = None  # the JSONL file, also the record that makes a rerun resume
    formats: tuple[str, ...] = ()  # per-file outputs into out_dir: txt, srt, vtt
    out_dir: str | None = None
    decoder: str = "greedy"  # greedy | beam
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA) | auto
    workers: int | None = None  # worker processes; None: one per core, 0: all in this process
    batch_seconds: float = 120.0  # padded audio per batch
    chunk_seconds: float = 30.0  # longer recordings are cut into pieces about this long
    overlap_seconds: float = 2.0  # context either side of a cut that is not in a pause
    references: str | None = None  # a JSONL manifest, or "txt": NAME.txt beside each audio file
    retry_failed: bool = False  # on resume, try again the files whose line has an error
    shard: tuple[int, int] | None = None  # (rank, world); None: from torchrun's environment
    progress: bool | None = None  # None: when stderr is a terminal
    stream: object = None  # where lines go without an output file (the CLI passes stdout)
    collect: bool = False  # keep every transcript for the caller (the Python API)
    model_in_workers: bool | None = None  # None: on the CPU yes, on a GPU the main process runs it


@dataclass
class Source:
    path: str  # as written in the output
    name: str  # per-file output name, relative to out_dir, without suffix
    reference: str | None = None


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


@dataclass
class Summary:
    files: int = 0  # in this rank's share
    resumed: int = 0  # already in the output
    transcribed: int = 0  # this run, failures included
    failed: int = 0  # lines with an error, resumed ones included
    audio_seconds: float = 0.0  # transcribed this run
    wall_seconds: float = 0.0
    seconds: dict = field(default_factory=dict)  # CPU seconds per stage: read, features, model, decode
    scores: dict | None = None  # WER/CER against references
    transcripts: list[FileTranscript] = field(default_factory=list)

    @property
    def rtf(self) -> float:
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0

    def as_dict(self) -> dict:
        fields = ("files", "resumed", "transcribed", "failed", "audio_seconds", "wall_seconds", "seconds")
        return {**{name: getattr(self, name) for name in fields}, "rtf": self.rtf, "scores": self.scores}

    def line(self) -> str:
        text = (
            f"{self.files} files ({self.resumed} already done, {self.failed} failed), "
            f"{self.audio_seconds / 3600:.2f} h of audio in {self.wall_seconds:.1f} s: RTF {self.rtf:.4f}"
        )
        if self.scores:
            text += (
                f"; WER {100 * self.scores['wer']:.1f}% CER {100 * self.scores['cer']:.1f}%"
                f" on {self.scores['utterances']} files with references"
            )
        return text


# ---------------------------------------------------------------- inputs
def collect_sources(paths: list[str]) -> list[Source]:
    """Expand folders (recursively, audio suffixes only), list files and JSONL manifests; each audio
    file once, in the order given. A path that is missing or not audio still becomes a source: it gets
    a line with the error."""
    sources: dict[str, Source] = {}

    def add(path: str, name: str, reference: str | None = None) -> None:
        sources.setdefault(path, Source(path, name, reference))

    for given in paths:
        location = Path(given)
        suffix = location.suffix.lower()
        if location.is_dir():
            for relative in _walk_audio(location):
                add(os.path.join(given, relative), str(Path(relative).with_suffix("")))
        elif suffix == ".jsonl" and location.is_file():
            for path, reference in _read_manifest(location):
                add(path, Path(path).stem, reference)
        elif suffix in LIST_SUFFIXES and location.is_file():
            for line in location.read_text().splitlines():
                line = line.strip()
                if line and not line.startswith("#"):
                    beside = location.parent / line
                    path = str(beside) if not os.path.isabs(line) and beside.exists() else line
                    add(path, Path(path).stem)
        else:
            add(given, location.stem)
    return _unique_names(list(sources.values()))


def _walk_audio(folder: Path) -> list[str]:
    found = []
    for root, folders, files in os.walk(folder, followlinks=True):
        folders[:] = sorted(name for name in folders if not name.startswith("."))
        for name in sorted(files):
            if not name.startswith(".") and Path(name).suffix.lower() in AUDIO_SUFFIXES:
                found.append(os.path.relpath(os.path.join(root, name), folder))
    return found


def _read_manifest(path: Path) -> list[tuple[str, str | None]]:
    """(audio path, reference text or None) per line of a manifest; paths relative to its folder."""
    entries = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
            audio = entry.get("audio") or entry["path"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError):
            raise TranscribeError(f"{path}:{number}: expected a JSON object with 'audio' or 'path'") from None
        text = entry.get("text")
        entries.append((str(path.parent / audio), None if text is None else str(text)))
    return entries


def _unique_names(sources: list[Source]) -> list[Source]:
    """Per-file output names that do not collide: x.wav and x.flac give x and x.flac, then x.flac-2."""
    taken: set[str] = set()
    for source in sources:
        name, number = source.name, 1
        if name in taken:  # x.wav and x.flac: x and x.flac
            name = source.name = source.name + Path(source.path).suffix
        while name in taken:
            number += 1
            name = f"{source.name}-{number}"
        taken.add(name)
        source.name = name
    return sources


def attach_references(sources: list[Source], references: str | None) -> None:
    """Reference texts from a JSONL manifest (audio/path + text) or from NAME.txt beside each file."""
    if references is None:
        return
    if references in ("txt", ".txt"):
        for source in sources:
            beside = Path(source.path).with_suffix(".txt")
            if beside.is_file():
                source.reference = beside.read_text()
        return
    if not Path(references).is_file():
        raise TranscribeError(f"{references}: reference manifest not found")
    texts = {os.path.abspath(path): text for path, text in _read_manifest(Path(references))}
    for source in sources:
        source.reference = texts.get(os.path.abspath(source.path), source.reference)


def normalise(text: str, chars: set[str]) -> str:
    """Lower case, characters outside the model's alphabet become spaces: what the model can write."""
    return " ".join("".join(c if c in chars else " " for c in text.lower()).split())


# ---------------------------------------------------------------- output: the ledger, per-file files
def write_atomic(path: Path, data: bytes, sync: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    with open(partial, "wb") as stream:
        stream.write(data)
        if sync:
            stream.flush()
            os.fsync(stream.fileno())
    os.replace(partial, path)


def read_records(path: Path) -> tuple[list[tuple[dict, bytes]], bool]:
    """The complete, valid lines of a JSONL output as (record, raw line); and whether anything (a torn
    last line, a line that is not a record) was left out."""
    if not path.exists():
        return [], False
    data = path.read_bytes()
    lines = data.split(b"\n")
    repaired = lines[-1] != b""  # no newline at the end: the last write was torn
    records = []
    for raw in lines[:-1]:
        try:
            record = json.loads(raw)
            valid = isinstance(record, dict) and isinstance(record.get("path"), str)
        except (json.JSONDecodeError, UnicodeDecodeError):
            valid = False
        if valid:
            records.append((record, raw + b"\n"))
        else:
            repaired = repaired or bool(raw.strip())
    return records, repaired


class Ledger:
    """The output JSONL as the record of finished files: one line per file, appended and flushed."""

    def __init__(self, path: Path, retry_failed: bool = False, also_done: list[Path] = ()):
        self.path = path
        self.done: dict[str, tuple[str | None, str | None]] = {}  # path -> (text, error)
        records, repaired = read_records(path)
        kept = [(r, raw) for r, raw in records if not (retry_failed and r.get("error"))]
        if repaired or len(kept) < len(records):
            write_atomic(path, b"".join(raw for _, raw in kept), sync=True)
        for other in also_done:  # e.g. the merged output, read while this rank writes its part
            kept += [(r, raw) for r, raw in read_records(other)[0] if not (retry_failed and r.get("error"))]
        for record, _ in kept:
            self.done.setdefault(record["path"], (record.get("text"), record.get("error")))
        self.repaired = repaired
        self.stream = None  # opened at the first line: a run with nothing to do leaves no file

    def append(self, record: dict) -> None:
        if self.stream is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.stream = open(self.path, "ab")
        self.stream.write((json.dumps(record) + "\n").encode())
        self.stream.flush()
        self.done[record["path"]] = (record["text"], record["error"])

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()


def merge(output: Path, parts: list[Path], order: list[str] | None = None) -> int:
    """One JSONL from `output` and part files: one line per path (a success wins over an error,
    otherwise the first seen), in `order` and then as found; written atomically, parts removed."""
    chosen: dict[str, tuple[dict, bytes]] = {}
    original = [] if not output.exists() else read_records(output)[0]
    for record, raw in original + [item for part in parts for item in read_records(part)[0]]:
        previous = chosen.get(record["path"])
        if previous is None or (previous[0].get("error") and not record.get("error")):
            chosen[record["path"]] = (record, raw)
    rank = {path: number for number, path in enumerate(order or [])}
    paths = sorted(chosen, key=lambda path: rank.get(path, len(rank)))  # stable: the rest as found
    if parts or [record["path"] for record, _ in original] != paths:
        write_atomic(output, b"".join(chosen[path][1] for path in paths), sync=True)
    for part in parts:
        part.unlink(missing_ok=True)
    return len(paths)


def write_outputs(transcript: FileTranscript, name: str, formats: tuple[str, ...], out_dir: Path) -> None:
    """Per-file .txt / .srt / .vtt, each written to a temporary file and renamed into place."""
    for kind in formats:
        if kind == "txt":
            text = transcript.text + "\n"
        elif kind == "srt":
            text = to_srt(transcript, transcript.duration)
        else:
            text = to_vtt(transcript, transcript.duration)
        write_atomic(out_dir / f"{name}.{kind}", text.encode())


# ---------------------------------------------------------------- planning and the worker side
def plan(durations: dict[int, float], options: Options) -> list[list[Piece]]:
    """Pieces (long recordings cut into chunks) sorted longest first, batched by padded length."""
    pieces = []
    for index, duration in durations.items():
        parts = math.ceil(duration / options.chunk_seconds) if duration > options.chunk_seconds else 1
        pieces += [Piece(index, duration, part, parts) for part in range(parts)]

    def cost(piece: Piece) -> float:
        return piece.duration / piece.parts + (2 * options.overlap_seconds if piece.parts > 1 else 0.0)

    pieces.sort(key=lambda piece: (-cost(piece), piece.index, piece.part))
    batches: list[list[Piece]] = []
    for piece in pieces:
        if batches and cost(batches[-1][0]) * (len(batches[-1]) + 1) <= options.batch_seconds:
            batches[-1].append(piece)
        else:
            batches.append([piece])
    return batches


class BatchReader(torch.utils.data.Dataset):
    """Batch number -> (results, CPU seconds per stage): every piece read, resampled and turned into
    frames; with `decode`, also run through the model and decoded (CPU workers)."""

    def __init__(self, recognizer, sources: list[Source], batches: list[list[Piece]], options: Options):
        self.recognizer, self.sources, self.batches, self.options = recognizer, sources, batches, options
        on_cpu = torch.device(recognizer.device).type == "cpu"
        self.decode = on_cpu if options.model_in_workers is None else options.model_in_workers

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, number: int) -> tuple[list[Result], dict[str, float]]:
        seconds = dict.fromkeys(("read", "features", "model", "decode"), 0.0)
        results = []
        for piece in self.batches[number]:
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
                result.error = f"{self.sources[piece.index].path}: {type(error).__name__}: {error}"
            results.append(result)
        if self.decode:
            transcribe_pieces(self.recognizer, results, self.options, seconds)
        return results, seconds

    def load(self, result: Result):
        """Samples of one piece at the model's rate; for a chunk, also where it sits in the recording."""
        piece, options = result.piece, self.options
        path, rate = self.sources[piece.index].path, self.recognizer.features.config.sample_rate
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


def transcribe_pieces(recognizer, results: list[Result], options: Options, seconds: dict) -> None:
    """Model and decoder over the readable pieces of one batch (in a worker, or in the main process)."""
    readable = [result for result in results if result.error is None]
    if not readable:
        return
    clock = time.process_time()
    log_probs = recognizer.forward([result.frames for result in readable], options.precision)
    seconds["model"] += time.process_time() - clock
    clock = time.process_time()
    decoder = recognizer.decoder(options.decoder)
    for result, item in zip(readable, log_probs, strict=True):
        result.frames = None
        if item.shape[0] == 0:  # shorter than one output frame
            result.transcript = Transcript("")
        else:
            result.transcript = decoder(item.unsqueeze(0), torch.tensor([item.shape[0]]))[0]
    seconds["decode"] += time.process_time() - clock


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # torch ops in forked workers deadlock on a multi-threaded pool


def _as_is(batch):
    return batch


# ---------------------------------------------------------------- the run
def resolve_precision(precision: str, device: str) -> str:
    """auto: bf16 where the hardware does it natively (CPUs with AVX512-BF16/AMX, most GPUs), else fp32."""
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    return "bf16" if native or getattr(torch.cpu, "_is_amx_tile_supported", lambda: False)() else "fp32"


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


def part_path(output: Path, rank: int, world: int) -> Path:
    return output.with_name(f"{output.name}.part{rank}of{world}")


class Writer:
    """Where each finished file goes: per-file outputs, then its line (ledger file, or a stream in
    input order, or kept for the Python API), and the running totals."""

    def __init__(self, sources, todo, options: Options, ledger: Ledger | None, summary: Summary):
        self.sources, self.options, self.ledger, self.summary = sources, options, ledger, summary
        self.formats = tuple(kind for kind in options.formats if kind != "jsonl")
        self.out_dir = Path(options.out_dir or (Path(options.output).parent if options.output else "."))
        self.stream_order, self.stream_next, self.waiting = todo, 0, {}
        self.collected: dict[int, FileTranscript] = {}
        self.texts: dict[int, tuple[str | None, str | None]] = {}
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
            self.texts[index] = (record["text"], record["error"])
        self.emitted.add(index)
        self.summary.transcribed += 1
        self.summary.failed += transcript.error is not None
        self.summary.audio_seconds += transcript.duration or 0.0


def run(recognizer, paths: list[str], options: Options) -> Summary:
    """Transcribe everything in `paths` that the output does not have yet; see the module docstring."""
    started = time.perf_counter()
    for kind in options.formats:
        if kind not in FORMATS:
            raise TranscribeError(f"unknown output format {kind!r}: expected some of {', '.join(FORMATS)}")
    if options.decoder not in ("greedy", "beam"):
        raise TranscribeError(f"unknown decoder {options.decoder!r}: expected greedy or beam")
    options = dataclasses.replace(options, precision=resolve_precision(options.precision, recognizer.device))
    sources = collect_sources(paths)
    if not sources:
        raise TranscribeError(f"no audio files in {' '.join(paths)}")
    attach_references(sources, options.references)
    rank, world, torchrun = shard_of(options)
    if world > 1 and not options.output:
        raise TranscribeError("several ranks need an output file (-o) to write their parts to")
    mine = [index for index in range(len(sources)) if index % world == rank]
    summary = Summary(files=len(mine))

    output = Path(options.output) if options.output else None
    ledger = None
    if output is not None:
        target = part_path(output, rank, world) if world > 1 else output
        ledger = Ledger(target, options.retry_failed, [output] if world > 1 else [])
        if ledger.repaired:
            print(f"recog: {target}: cut off a torn last line left by an interrupted run", file=sys.stderr)
    done = ledger.done if ledger else {}
    previous = [done[sources[index].path] for index in mine if sources[index].path in done]
    summary.resumed, summary.failed = len(previous), sum(bool(error) for _, error in previous)
    todo = [index for index in mine if sources[index].path not in done]
    writer = Writer(sources, todo, options, ledger, summary)
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
    summary.scores = score(sources, mine, done, writer.texts, recognizer.vocab)
    if options.collect:  # the Python API: every file's transcript, resumed ones from the output
        collected = writer.collected
        if ledger is not None and len(collected) < len(mine):
            records = {r["path"]: r for path in (output, ledger.path) for r, _ in read_records(path)[0]}
            for index in mine:
                if index not in collected and sources[index].path in records:
                    collected[index] = FileTranscript.from_record(records[sources[index].path])
        summary.transcripts = [collected[index] for index in mine if index in collected]
    return summary


def transcribe_sources(recognizer, sources, todo, options: Options, writer: Writer, started: float) -> None:
    """Probe, plan, then run the batches through the workers and hand every file to the writer."""
    durations = {}
    for index in todo:  # headers only: bad files are answered at once, the rest sorted by duration
        try:
            durations[index] = probe_audio(sources[index].path).duration
        except AudioError as error:
            writer.emit(index, FileTranscript("", error=str(error)))
    batches = plan(durations, options)
    ranks_here = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))  # torchrun: the cores are shared
    cores = max(1, len(os.sched_getaffinity(0)) // ranks_here)
    workers = cores if options.workers is None else options.workers
    workers = min(workers, len(batches))
    if options.decoder == "beam":
        recognizer.decoder("beam")  # load the LM once, before the workers fork
    reader = BatchReader(recognizer, sources, batches, options)
    loader = torch.utils.data.DataLoader(
        reader,
        batch_size=None,
        num_workers=workers,
        collate_fn=_as_is,
        worker_init_fn=_worker_init if workers else None,
        multiprocessing_context="fork" if workers else None,
        prefetch_factor=2 if workers else None,
        in_order=False,
    )
    import tqdm

    tqdm.tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
    progress = tqdm.tqdm(
        total=len(todo),
        initial=len(todo) - len(durations),
        unit="file",
        disable=not (sys.stderr.isatty() if options.progress is None else options.progress),
        mininterval=0.5,
        dynamic_ncols=True,
    )
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


def score(sources, mine, done, texts, vocab) -> dict | None:
    """WER/CER over the files that have a reference and a transcript (failed files are counted apart)."""
    rate, failed, chars = ErrorRate(), 0, set(vocab.chars)
    for index in mine:
        source = sources[index]
        if source.reference is None:
            continue
        text, error = texts.get(index) or done.get(source.path, (None, "missing"))
        if error:
            failed += 1
            continue
        rate.add(normalise(source.reference, chars), text or "")
    if not rate.utterances and not failed:
        return None
    return {**rate.as_dict(), "failed_with_reference": failed}
