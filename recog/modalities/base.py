"""What every input type (speech, pen strokes, line images) tells the rest of recog: how to read a file,
how an input is kept in memory and in shards, how it becomes feature frames, how training perturbs it,
and how an output frame maps back to the input (a time, a point range, a pixel column).

Datasets, the Recognizer, `recog read`, `recog align` and `recog lm tune` hold a `Modality` and ask it;
none of them asks which modality it is. A new input type is one new module here.
"""

from __future__ import annotations

import multiprocessing
import tarfile
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from recog.datasets.manifest import Utterance
from recog.features.cmvn import CMVN, FrameSums
from recog.vocab import DEFAULT_CHARS  # noqa: F401  (re-exported)


@dataclass
class Loaded:
    """Inputs of a set as kept in memory (per key), their feature frame counts, why the others could not
    be loaded, and frame sums of a random subset for the normalisation statistics."""

    stored: dict[str, Any] = field(default_factory=dict)
    frames: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    sums: FrameSums = field(default_factory=FrameSums)

    def add(self, other: Loaded) -> None:
        self.stored.update(other.stored)
        self.frames.update(other.frames)
        self.errors.update(other.errors)
        self.sums.merge(other.sums.count, other.sums.total, other.sums.squares)


@dataclass
class Located:
    """One input file made ready for a positional read-out: normalised frames, per frame its place in
    the input (a sample, point index or pixel column), and facts for the output record."""

    frames: torch.Tensor  # (time, feat), not yet normalised
    places: np.ndarray  # (time,)
    facts: dict  # size of the input, and "extent": the (first, one-past-last) place with content


class Modality:
    """Base class; subclasses set the class attributes and implement the methods marked so."""

    name: ClassVar[str]  # the checkpoint's "task": speech | ink | image
    suffixes: ClassVar[Collection[str]]  # file extensions of its inputs
    kind: ClassVar[str]  # "an audio file", for messages
    items: ClassVar[str]  # "utterances" or "lines", for messages
    member: ClassVar[str]  # the webdataset shard member holding an input ("flac", "ink.npz", "png")
    app: ClassVar[str]  # the command that reads files of this kind
    group_by: ClassVar[str]  # manifest fields naming a report's per-group rows (first present wins)
    feature_section: ClassVar[str]  # the Config field with the feature config
    augment_section: ClassVar[str]  # the Config field with the training perturbations
    feature_types: ClassVar[tuple[type, type]]  # (features class, its config class)
    error: ClassVar[type[Exception]]  # what its readers raise for a bad input
    timed: ClassVar[bool] = False  # output frames are times (speech), not places in a drawing
    unit: ClassVar[str]  # what a character's start and end count: seconds, points, columns
    unreadable: ClassVar[str] = "unreadable sample"  # preflight's reason prefix

    def __init__(self, features) -> None:
        self.features = features

    @property
    def config(self):
        return self.features.config

    # ---- reading and storing (subclasses)
    def read(self, source: str | Path | bytes, name: str | None = None) -> Any:
        """A file (or its bytes, named `name`) -> the reader's output (waveform, Ink, ink map); `error`
        naming the file if unusable."""
        raise NotImplementedError

    def store_file(self, path: str) -> Any:
        """A file -> its in-memory form (compact: int16 audio, npz ink, png bytes)."""
        raise NotImplementedError

    def store_member(self, data: bytes, name: str) -> Any:
        """A shard member's bytes -> its in-memory form."""
        raise NotImplementedError

    def restore(self, stored: Any, name: str = "<stored>") -> Any:
        """The in-memory form -> the reader's output."""
        raise NotImplementedError

    def frame_count(self, sample: Any, name: str) -> int:
        """Feature frames of one input (cheaper than computing them where the modality can)."""
        return int(self.frames(sample, name).shape[0])

    @staticmethod
    def pack(path: Path, sample_rate: int) -> tuple[dict[str, bytes], dict[str, object]]:
        """An input file -> its shard members and measured manifest fields (`recog data import`);
        ConvertError if unusable (subclasses)."""
        raise NotImplementedError

    # ---- frames
    def frames(self, sample: Any, name: str | None = None) -> torch.Tensor:
        """(time, feat) feature frames, not normalised."""
        frames = self.features(sample)
        if isinstance(frames, np.ndarray):
            frames = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        return frames

    def frame_seconds(self, stack: int) -> float:
        """Seconds per model output frame; handwriting counts output frames (1.0)."""
        return 1.0

    def normaliser(self, loaded: Loaded) -> CMVN:
        """Normalisation from the frame sums of the training set's random subset."""
        return loaded.sums.cmvn("global")

    def augmented(self, sample: Any, augment, rng: np.random.Generator, cmvn: CMVN, min_frames: int):
        """Normalised frames of one training input under a random perturbation drawn from `rng`, or None
        to use the input as it is (subclasses)."""
        raise NotImplementedError

    def too_long(self, stored: Any, frames: int, data) -> str | None:
        """Why a training input is over the data config's length limit (`data.max_frames` feature
        frames unless the modality has its own), or None."""
        if data.max_frames and frames > data.max_frames:
            return f"longer than data.max_frames ({frames} > {data.max_frames} frames)"
        return None

    # ---- where an output frame is in the input (subclasses)
    def place(self, sample: Any, name: str | None = None) -> Located:
        """Frames of a read input with, per frame, its place in the input."""
        raise NotImplementedError

    def locate(self, source: str | bytes, name: str | None = None) -> Located:
        """`place` of a file (or its bytes, named `name`)."""
        return self.place(self.read(source, name), name or str(source))

    def draw(self, sample: Any, chars: list[dict], words: list[dict], png: Path, title: str) -> None:
        """A picture of the input with where each recognised character or word lies (subclasses)."""
        raise NotImplementedError

    def to_input(self, position: float, places: np.ndarray, extent: tuple[int, int]) -> int:
        """A boundary between feature frames (`position`, in frames) -> a place in the input."""
        raise NotImplementedError

    # ---- loading a set
    def load(
        self, utterances: list[Utterance], workers: int = 1, stats_samples: int = 0, seed: int = 0
    ) -> Loaded:
        """Every utterance's input, from its shard or its own file, with its frame count; with
        `stats_samples`, the frames of that many random inputs summed for normalisation. A bad input
        costs only its own key (its error is kept); a torn shard only the keys not read yet."""
        by_shard: dict[str, list[str]] = defaultdict(list)
        files: list[tuple[str, str]] = []
        for utterance in utterances:
            if utterance.shard:
                by_shard[utterance.shard].append(utterance.key)
            else:
                files.append((utterance.key, str(utterance.audio)))
        chosen = np.random.default_rng(seed).permutation(len(utterances))[:stats_samples]
        stats_keys = {utterances[i].key for i in chosen}
        jobs: list[tuple] = [
            (self, "shard", shard, keys, stats_keys & set(keys)) for shard, keys in by_shard.items()
        ]
        step = max(1, len(files) // max(1, workers * 4))
        for start in range(0, len(files), step):
            part = files[start : start + step]
            jobs.append((self, "files", None, part, stats_keys & {key for key, _ in part}))
        loaded = Loaded()
        if workers > 1 and len(jobs) > 1:
            with multiprocessing.get_context("fork").Pool(
                min(workers, len(jobs)), initializer=_single_thread
            ) as pool:
                for part in pool.imap_unordered(_load_job, jobs):
                    loaded.add(part)
        else:
            for job in jobs:
                loaded.add(_load_job(job))
        return loaded

    def _measure(self, loaded: Loaded, key: str, name: str, stats: bool) -> None:
        """Frame count (and statistics) of a stored input; a failure becomes the key's error."""
        try:
            sample = self.restore(loaded.stored[key], name)
            loaded.frames[key] = self.frame_count(sample, name)
            if stats:
                loaded.sums.add(self.frames(sample, name))
        except self.error as error:
            loaded.errors[key] = str(error)
        except Exception as error:  # one odd input must not stop the load; it is reported and skipped
            loaded.errors[key] = f"{name}: {type(error).__name__}: {error}"
        if key in loaded.errors:
            loaded.stored.pop(key, None)
            loaded.frames.pop(key, None)


def _single_thread() -> None:
    torch.set_num_threads(1)  # forked children must not enter the parent's OpenMP pool


def _load_job(job: tuple) -> Loaded:
    modality, kind, shard, keys, stats_keys = job
    return (
        _load_shard(modality, shard, keys, stats_keys)
        if kind == "shard"
        else _load_files(modality, keys, stats_keys)
    )


def _load_files(modality: Modality, items: list[tuple[str, str]], stats_keys: set[str]) -> Loaded:
    loaded = Loaded()
    for key, path in items:
        try:
            loaded.stored[key] = modality.store_file(path)
        except modality.error as error:
            loaded.errors[key] = str(error)
            continue
        except Exception as error:
            loaded.errors[key] = f"{path}: {type(error).__name__}: {error}"
            continue
        modality._measure(loaded, key, path, key in stats_keys)
    return loaded


def _load_shard(modality: Modality, shard: str, keys: list[str], stats_keys: set[str]) -> Loaded:
    wanted, loaded, seen = set(keys), Loaded(), set()
    try:
        with tarfile.open(shard) as archive:
            for info in archive:
                key, _, suffix = info.name.partition(".")
                seen.add(key)
                if key in wanted and suffix == modality.member and info.isfile():
                    name = f"{shard}:{key}"
                    try:
                        loaded.stored[key] = modality.store_member(archive.extractfile(info).read(), name)
                    except modality.error as error:
                        loaded.errors[key] = str(error)
    except (OSError, tarfile.TarError, EOFError) as error:  # a torn tar loses only the keys not read yet
        reason = f"{shard}: unreadable shard ({type(error).__name__}: {error})"
        loaded.errors.update({key: reason for key in wanted - loaded.stored.keys() - loaded.errors.keys()})
    for key in wanted - loaded.stored.keys() - loaded.errors.keys():
        if key in seen:
            loaded.errors[key] = f"{shard}:{key}: sample has no '{modality.member}' member"
        else:
            loaded.errors[key] = f"{shard}:{key}: not found in shard"
    for key in list(loaded.stored):
        modality._measure(loaded, key, f"{shard}:{key}", key in stats_keys)
    return loaded
