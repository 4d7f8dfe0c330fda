"""The job: which inputs are this rank's and not done yet, one line per input (in the ledger as it
finishes, or on a stream in input order), the progress bar, and the end (the output rewritten once
in input order; under torchrun the ranks' parts merged by rank 0).

The app (transcribe, read) only turns inputs into records: `process(todo, emit)` calls `emit(index,
record)` once for every input in `todo`, in any order. Inputs that are not regular files never reach
it: they get their error line here."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from recog.jobs.discovery import not_regular
from recog.jobs.ledger import JobError, Ledger, Scan, check_output_path, part_path
from recog.jobs.lock import OutputLock
from recog.jobs.merge import merge, merge_locked


@dataclass
class JobOptions:
    output: str | None = None  # the JSONL ledger; None: lines go to `stream`
    retry_failed: bool = False  # on resume, try again the inputs whose line has an error
    shard: tuple[int, int] | None = None  # (rank, world); None: from torchrun's environment
    progress: bool | None = None  # None: when stderr is a terminal
    stream: object = None  # where lines go without an output file (the CLI passes stdout)
    collect: bool = False  # keep every record of this rank's share (the Python API)


@dataclass
class JobResult:
    files: int = 0  # in this rank's share
    resumed: int = 0  # already in the output
    processed: int = 0  # this run, failures included
    failed: int = 0  # lines with an error, resumed ones included
    records: dict[int, dict] = field(default_factory=dict)  # with `collect`: index -> record


def shard_of(shard: tuple[int, int] | None) -> tuple[int, int, bool]:
    """(rank, world, under torchrun)."""
    if shard is not None:
        rank, world = shard
        if not 0 <= rank < world:
            raise JobError(f"--shard {rank}/{world}: rank {rank} is not in 0..{world - 1}")
        return rank, world, False
    world = int(os.environ.get("WORLD_SIZE", "1"))
    return int(os.environ.get("RANK", "0")), world, world > 1


def run_job(
    paths: list[str],
    process: Callable[[list[int], Callable[[int, dict], None]], None],
    options: JobOptions,
    model: str,
    failure: Callable[[str, str], dict],
    on_record: Callable[[int, dict], None] | None = None,
    on_resumed: Callable[[int, str | None, str | None], None] | None = None,
    postfix: Callable[[JobResult], str] | None = None,
    model_label: str | None = None,
) -> JobResult:
    """Run `process` over the inputs of this rank that the output does not have yet; see the module
    docstring. `failure(path, error)` makes the app's error record; `on_record` sees every new record before it is written (per-file outputs, scores),
    `on_resumed` every input found done, `postfix` the progress bar's text; `model_label` (the checkpoint) is named in errors."""
    rank, world, torchrun = shard_of(options.shard)
    if world > 1 and not options.output:
        raise JobError("several ranks need an output file (-o) to write their parts to")
    mine = [index for index in range(len(paths)) if index % world == rank]
    result = JobResult(files=len(mine))
    output = Path(options.output) if options.output else None
    lock, ledger, read_back = None, None, []
    if output is not None:
        check_output_path(output)
        target = part_path(output, rank, world) if world > 1 else output
        check_output_path(target)
        lock = OutputLock(target).acquire()
    try:
        if output is not None:
            also = [output] if world > 1 else []
            ledger = Ledger(target, model, options.retry_failed, also, model_label)
            if ledger.repaired:
                print(
                    f"recog: {target}: cut off a torn last line left by an interrupted run", file=sys.stderr
                )
            read_back = [target, output] if world > 1 else [output]
        done = ledger.done if ledger else {}
        for index in mine:
            if paths[index] in done:
                text, error = done[paths[index]]
                result.resumed += 1
                result.failed += bool(error)
                if on_resumed is not None:
                    on_resumed(index, text, error)
        todo = [index for index in mine if paths[index] not in done]
        writer = Writer(paths, todo, ledger, options, result, model, on_record)
        progress = file_progress(len(mine), result.resumed, options.progress)
        writer.progress, writer.postfix = progress, postfix
        try:
            rest = []
            for index in todo:
                problem = not_regular(paths[index])
                if problem:
                    writer.emit(index, failure(paths[index], problem))
                else:
                    rest.append(index)
            process(rest, writer.emit)
        finally:
            progress.close()
            if ledger is not None:
                ledger.close()
        if len(writer.emitted) != len(todo):  # a bug in the app, not in an input: say so loudly
            missing = [paths[index] for index in todo if index not in writer.emitted][:3]
            raise JobError(f"internal error: no line for {', '.join(missing)}")
        if output is not None and world == 1:
            merge_locked(output, [], paths, model)  # complete: rewritten once in input order
    finally:
        if lock is not None:
            lock.release()
    if output is not None and torchrun:
        finish_ranks(output, rank, world, paths, model)
    if options.collect:
        result.records = writer.collected
        wanted = {paths[index]: index for index in mine if index not in result.records}
        for path in read_back if wanted else []:
            if path.exists():
                for _, _, record in Scan(path, model):
                    index = wanted.pop(record["path"], None)
                    if index is not None:
                        result.records[index] = record
    return result


class Writer:
    """Where each finished input goes: its line (the ledger, or the stream in input order, kept for
    the Python API) and the counts."""

    def __init__(self, paths, todo, ledger, options: JobOptions, result: JobResult, model: str, on_record):
        self.paths, self.ledger, self.options, self.result = paths, ledger, options, result
        self.model, self.on_record = model, on_record
        self.order, self.next, self.waiting = todo, 0, {}
        self.emitted: set[int] = set()
        self.collected: dict[int, dict] = {}
        self.progress = self.postfix = None

    def emit(self, index: int, record: dict) -> None:
        if index in self.emitted:
            return
        if self.on_record is not None:
            self.on_record(index, record)
        record = {**record, "model": self.model}
        if self.ledger is not None:
            self.ledger.append(record)
        elif self.options.stream is not None:  # nothing to resume from: keep input order for the reader
            self.waiting[index] = record
            while self.next < len(self.order) and self.order[self.next] in self.waiting:
                write_line(self.options.stream, self.waiting.pop(self.order[self.next]))
                self.next += 1
        if self.options.collect:
            self.collected[index] = record
        self.emitted.add(index)
        self.result.processed += 1
        self.result.failed += record["error"] is not None
        if self.progress is not None:
            self.progress.update(1)
            if self.postfix is not None:
                self.progress.set_postfix_str(self.postfix(self.result))


def write_line(stream, record: dict) -> None:
    import json

    try:
        stream.write(json.dumps(record) + "\n")
        stream.flush()
    except OSError as error:
        name = getattr(stream, "name", "the output stream")
        raise StreamError(f"cannot write to {name} ({error.strerror or error})") from None


class StreamError(JobError):
    """Writing a line to the stream (stdout) failed: a full disk, a closed pipe."""


def finish_ranks(output: Path, rank: int, world: int, order: list[str], model: str) -> None:
    """Under torchrun: wait for every rank, then rank 0 merges the parts into the output."""
    import datetime

    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo", timeout=datetime.timedelta(days=7))
    dist.barrier()
    try:
        if rank == 0:
            merge(output, [part_path(output, r, world) for r in range(world)], order, model)
    finally:
        dist.barrier()
        dist.destroy_process_group()


def file_progress(total: int, initial: int, show: bool | None):
    """The per-file progress bar on stderr (shown on a terminal unless `show` says otherwise)."""
    import tqdm

    tqdm.tqdm.monitor_interval = 0  # no monitor thread in a process that forks workers
    return tqdm.tqdm(
        total=total,
        initial=initial,
        unit="file",
        disable=not (sys.stderr.isatty() if show is None else show),
        mininterval=0.5,
        dynamic_ncols=True,
    )
