"""Runs one import: scan the source, split it, decode every input (in worker processes), write the
webdataset shards and JSONL manifests training reads, then vocab.json and import-report.json."""

from __future__ import annotations

import io
import json
import multiprocessing
import os
import sys
import tarfile
import time
import unicodedata
from collections import Counter
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from recog.datasets.importers import output
from recog.datasets.importers.base import (
    SPLITS,
    Candidate,
    Format,
    ImporterError,
    Options,
    Problem,
    assign_splits,
)
from recog.datasets.importers.convert import ConvertError, convert
from recog.vocab import DEFAULT_CHARS

SHARD_BYTES = 512 * 1024 * 1024  # a shard also closes at this size (long recordings)
PRINTED_PROBLEMS = 50  # problems printed one per line; all of them go into the report


class ShardSet:
    """One split's shards `shards/{split}-NNNN.tar` and manifest `{split}.jsonl`, in the layout
    pipelines/manifest_writer.py writes for the corpus makers (shard paths relative to the manifest)."""

    def __init__(self, root: Path, split: str, samples_per_shard: int) -> None:
        self.root, self.split, self.samples_per_shard = root, split, samples_per_shard
        self.manifest = open(root / f"{split}.jsonl", "w", encoding="utf-8")
        self.archive: tarfile.TarFile | None = None
        self.shards = self.count = self.bytes = 0

    def write(self, key: str, members: dict[str, bytes], fields: dict[str, object]) -> None:
        if self.archive is None or self.count >= self.samples_per_shard or self.bytes >= SHARD_BYTES:
            self._next_shard()
        payload = {**members, "json": json.dumps(fields, ensure_ascii=False).encode("utf-8")}
        for suffix, data in payload.items():  # a sample's members stay together, as webdataset needs
            info = tarfile.TarInfo(f"{key}.{suffix}")
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            self.archive.addfile(info, io.BytesIO(data))
            self.bytes += len(data)
        self.count += 1
        line = {"key": key, "text": fields["text"], **fields, "shard": f"shards/{self.name}"}
        self.manifest.write(json.dumps(line, ensure_ascii=False) + "\n")

    @property
    def name(self) -> str:
        return f"{self.split}-{self.shards - 1:04d}.tar"

    def _next_shard(self) -> None:
        if self.archive is not None:
            self.archive.close()
        (self.root / "shards").mkdir(exist_ok=True)
        self.shards += 1
        self.archive = tarfile.open(self.root / "shards" / self.name, "w", format=tarfile.PAX_FORMAT)
        self.count = self.bytes = 0

    def close(self) -> None:
        if self.archive is not None:
            self.archive.close()
        self.manifest.close()


def _converted(jobs: list[tuple[str, str, int]], workers: int):
    """convert() over the jobs, in order; a pool of forked workers when there are several."""
    if workers <= 1 or len(jobs) < 2:
        yield from map(convert, jobs)
        return
    with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
        yield from pool.imap(convert, jobs, chunksize=8)


def _relative(path: Path, sources: list[Path]) -> str:
    for source in sources:
        root = source if source.is_dir() else source.parent
        if root in path.parents:
            return path.relative_to(root).as_posix()
    return str(path)


def vocabulary(texts: dict[str, list[str]], task: str) -> dict:
    """Which characters the imported transcripts hold, how often, and which the task's built-in
    vocabulary lacks (as written, and after lowercasing)."""
    counts: Counter[str] = Counter()
    by_split = {}
    for split, lines in texts.items():
        split_counts = Counter("".join(lines))
        by_split[split] = dict(split_counts.most_common())
        counts.update(split_counts)
    known = set(DEFAULT_CHARS)
    outside = {char: n for char, n in counts.most_common() if char not in known}
    return {
        "characters": len(counts),
        "counts": dict(counts.most_common()),
        "names": {char: unicodedata.name(char, f"U+{ord(char):04X}") for char in counts},
        "by_split": by_split,
        "task_vocabulary": DEFAULT_CHARS,
        "outside_task_vocabulary": outside,
        "outside_after_lowercasing": {c: n for c, n in outside.items() if c.lower() not in known},
    }


def _check_options(options: Options) -> None:
    for name in ("dev_fraction", "test_fraction"):
        if not 0.0 <= getattr(options, name) < 1.0:
            raise ImporterError(
                f"--{name.replace('_', '-')}: expected a value in [0, 1), got {getattr(options, name)}"
            )
    if options.dev_fraction + options.test_fraction >= 1.0:
        raise ImporterError("--dev-fraction + --test-fraction must leave some samples for training (sum < 1)")
    for name in ("sample_rate", "workers", "samples_per_shard"):
        if getattr(options, name) < 1:
            raise ImporterError(
                f"--{name.replace('_', '-')}: expected a value >= 1, got {getattr(options, name)}"
            )
    for split, _ in options.split_files:
        if split not in SPLITS:
            raise ImporterError(f"--split-file {split}=...: the split must be one of {', '.join(SPLITS)}")


def run_import(
    fmt: Format, sources: list[Path], out: Path, options: Options, log: TextIO | None = None
) -> dict:
    """Import `sources` in format `fmt` into `out`; returns the report (also written to the folder)."""
    _check_options(options)
    log = log or sys.stderr
    sources = [Path(os.path.abspath(source)) for source in sources]
    if not sources:
        raise ImporterError("no source given")
    for source in sources:
        if not source.exists():
            raise ImporterError(f"{source}: source not found")
    build = output.prepare(Path(out), sources)
    try:
        report = _build(fmt, sources, build.path, options, log)
    except BaseException:
        build.abandon()
        raise
    output.finish(build, report)
    return report


def _build(fmt: Format, sources: list[Path], root: Path, options: Options, log: TextIO) -> dict:
    scan = fmt.scan(sources, options)
    problems: list[Problem] = list(scan.problems)
    assign_splits(scan.candidates, options, fmt.group_fields)
    for problem in problems[:PRINTED_PROBLEMS]:
        print(f"[import] {problem}", file=log)
    printed = min(len(problems), PRINTED_PROBLEMS)
    by_split: dict[str, list[Candidate]] = {split: [] for split in SPLITS}
    for candidate in scan.candidates:
        by_split[candidate.split].append(candidate)
    splits, texts = {}, {}
    started = last = time.monotonic()
    done, total = 0, len(scan.candidates)
    for split, candidates in by_split.items():
        if not candidates:
            continue
        candidates.sort(key=lambda c: c.key)
        shards = ShardSet(root, split, options.samples_per_shard)
        seconds, written = 0.0, []
        jobs = [(fmt.task, str(c.path), options.sample_rate) for c in candidates]
        try:
            for candidate, result in zip(candidates, _converted(jobs, options.workers), strict=True):
                done += 1
                if isinstance(result, ConvertError):
                    problems.append(
                        Problem(
                            str(candidate.path), str(result).removeprefix(f"{candidate.path}: "), result.kind
                        )
                    )
                    if printed < PRINTED_PROBLEMS:
                        print(f"[import] {problems[-1]}", file=log)
                        printed += 1
                    continue
                members, measured = result
                fields = {
                    "text": candidate.text,
                    **measured,
                    **candidate.fields,
                    "file": _relative(candidate.path, sources),
                }
                shards.write(candidate.key, members, fields)
                written.append(candidate.text)
                seconds += float(measured.get("duration", 0.0))
                if time.monotonic() - last > 10:
                    last = time.monotonic()
                    print(
                        f"[import] {done}/{total} inputs ({done / (last - started):.0f}/s)",
                        file=log,
                        flush=True,
                    )
        finally:
            shards.close()
        splits[split] = {"samples": len(written), "manifest": f"{split}.jsonl", "shards": shards.shards}
        if seconds:  # timed inputs (audio, ink with pen times)
            splits[split]["seconds"] = round(seconds, 1)
        texts[split] = written
    if len(problems) > printed:
        print(
            f"[import] ... {len(problems) - printed} more problems, all listed in {output.REPORT}", file=log
        )
    vocab = vocabulary(texts, fmt.task)
    (root / "vocab.json").write_text(json.dumps(vocab, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    notes = []
    if not splits.get("dev"):
        notes.append("no dev split: training needs one (pass --dev-fraction, or import the source's dev set)")
    if vocab["outside_task_vocabulary"]:
        chars = "".join(vocab["outside_task_vocabulary"])
        notes.append(
            f"{len(chars)} characters are outside recog's built-in {fmt.task} vocabulary: {chars!r} "
            f"({''.join(vocab['outside_after_lowercasing'])!r} even after lowercasing); see vocab.json"
        )
    return {
        "tool": output.TOOL,
        "version": 1,
        "format": fmt.name,
        "task": fmt.task,
        "sources": [str(source) for source in sources],
        "options": asdict(options),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "imported": sum(s["samples"] for s in splits.values()),
        "failed": len(problems),
        "splits": splits,
        "problems_by_kind": dict(Counter(p.kind for p in problems).most_common()),
        "notes": notes,
        "problems": [asdict(p) for p in problems],
    }
