"""Batch jobs over many input files, shared by `recog transcribe` and `recog read`.

discovery: which files (cycle-safe folder walks, regular files only); ledger: the output JSONL as
the record of finished files (each line names the model that wrote it; a file that is not ours is
never written); lock: one writer per output; merge: parts into one output, removing only parts it
checked; checks: option values, the model's kind and id, per-input isolation of a failing batch;
runner: the job itself (resume, shards and torchrun, order, progress).

The guarantees: nothing is deleted or truncated that recog did not write (a torn last line of its
own is cut off); every input of a finished job has exactly one line; a bad input, or a batch that
fails because of one, costs no other input its line."""

from recog.jobs.checks import check_task, file_sha256, isolated, model_tag
from recog.jobs.discovery import not_regular, walk
from recog.jobs.ledger import (
    JobError,
    Ledger,
    check_output_path,
    iter_records,
    part_path,
    read_records,
    write_atomic,
)
from recog.jobs.lock import OutputLock
from recog.jobs.merge import merge
from recog.jobs.runner import JobOptions, JobResult, StreamError, file_progress, run_job, shard_of

__all__ = [
    "JobError",
    "JobOptions",
    "JobResult",
    "Ledger",
    "OutputLock",
    "StreamError",
    "check_output_path",
    "check_task",
    "file_progress",
    "file_sha256",
    "isolated",
    "iter_records",
    "merge",
    "model_tag",
    "not_regular",
    "part_path",
    "read_records",
    "run_job",
    "shard_of",
    "walk",
    "write_atomic",
]
