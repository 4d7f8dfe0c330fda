"""Batch transcription: files, folders, list files and manifests -> one JSONL line per audio file.

Fast: headers are probed (cheap), pieces sorted by duration and batched by padded length; worker
processes read, resample, compute features, run the model and decode (on a GPU the model runs in the
main process). Long recordings are cut at pauses, or with overlap where there is none, and stitched
back. Resumable and lossless through the job layer (`recog.jobs`): the output JSONL is the record of
finished files (append + flush per line, a torn last line cut off on restart, each line naming the
model that wrote it), every input gets exactly one line, and a finished run is rewritten once in
input order. Flat memory: nothing per file is held beyond a few numbers and its
path (see `batches` and `ledger`).

inputs: what to transcribe; batches: planning and the worker side; ledger: the output files;
engine: the run.
"""

from recog.precision import resolve_precision
from recog.transcribe.batches import BatchReader, Piece, Plan, Result, plan
from recog.transcribe.engine import default_device, run
from recog.transcribe.inputs import Source, attach_references, collect_sources, normalise
from recog.transcribe.ledger import Ledger, iter_records, merge, read_records, write_atomic, write_outputs
from recog.transcribe.options import FORMATS, Options, Summary, TranscribeError

__all__ = [
    "FORMATS",
    "BatchReader",
    "Ledger",
    "Options",
    "Piece",
    "Plan",
    "Result",
    "Source",
    "Summary",
    "TranscribeError",
    "attach_references",
    "collect_sources",
    "default_device",
    "iter_records",
    "merge",
    "normalise",
    "plan",
    "read_records",
    "resolve_precision",
    "run",
    "write_atomic",
    "write_outputs",
]
