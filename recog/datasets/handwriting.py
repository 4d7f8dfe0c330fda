"""Handwriting datasets: ink (pen strokes) and line images read from webdataset shards.

Samples stay in memory as their compact stored bytes (ink.npz, png) and are decoded per item. Loading
also measures each sample's feature frames (for length bucketing and the CTC feasibility check) and
sums the frames of a random subset for the global normalisation statistics. Training items are rewritten by a random writer (ink) or pen/paper/scanner (images), seeded by
(seed, epoch, index) so that a resumed run sees the perturbations it would have seen.
"""

from __future__ import annotations

import multiprocessing
import tarfile
from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import torch

from recog.config import PaperAugmentConfig, WriterAugmentConfig
from recog.datasets.manifest import Utterance
from recog.datasets.preflight import EMPTY_TRANSCRIPT, Problem, ctc_frames_needed
from recog.features.image import ImageFeatures, PaperStyle, degrade, stretch_width
from recog.features.speech import CMVN
from recog.features.strokes import StrokeFeatures, WriterStyle, frame_count
from recog.image import ImageError, read_image
from recog.ink import Ink, InkError, decode_ink
from recog.vocab import Vocab

MEMBERS = {"ink": "ink.npz", "image": "png"}  # the shard member holding each task's input


def decode_stored(task: str, data: bytes, name: str = "<bytes>") -> Ink | np.ndarray:
    """Stored bytes -> the reader's output: an `Ink` (task ink) or an ink map (task image)."""
    if task == "ink":
        return decode_ink(data, name)
    return read_image(data, name)


@dataclass
class Loaded:
    """Stored bytes, feature frame counts and load errors per key; frame sums for normalisation."""

    stored: dict[str, bytes]
    frames: dict[str, int]
    errors: dict[str, str]
    count: int = 0
    total: np.ndarray | None = None
    squares: np.ndarray | None = None

    def add(self, other: Loaded) -> None:
        self.stored.update(other.stored)
        self.frames.update(other.frames)
        self.errors.update(other.errors)
        if other.count:
            self.count += other.count
            self.total = other.total if self.total is None else self.total + other.total
            self.squares = other.squares if self.squares is None else self.squares + other.squares

    def cmvn(self, mode: str) -> CMVN:
        if not self.count:
            raise ValueError("no frames to compute normalisation statistics from")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 1e-8))
        return CMVN(mode, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))


def _features(task: str, config) -> StrokeFeatures | ImageFeatures:
    return StrokeFeatures(config) if task == "ink" else ImageFeatures(config)


def _measure(task: str, features, sample, name: str) -> int:
    """Feature frames of one sample; for ink counted without computing the frames (exact, faster).
    InkError / ImageError (naming `name`) past the features' limits."""
    if task == "ink":
        return frame_count(sample, features.config)
    return int(features(sample, name).shape[0])


def _read_shard(job: tuple[str, object, str, list[str], set[str]]) -> Loaded:
    """One shard: the wanted samples' bytes and frame counts; frame sums over `stats_keys`."""
    task, feature_config, shard, keys, stats_keys = job
    wanted, member = set(keys), MEMBERS[task]
    loaded = Loaded({}, {}, {})
    try:
        with tarfile.open(shard) as archive:
            for info in archive:
                key, _, suffix = info.name.partition(".")
                if key in wanted and suffix == member and info.isfile():
                    loaded.stored[key] = archive.extractfile(info).read()
    except (OSError, tarfile.TarError, EOFError) as error:  # a torn tar loses only the keys not read yet
        reason = f"{shard}: unreadable shard ({type(error).__name__}: {error})"
        loaded.errors.update({key: reason for key in wanted - loaded.stored.keys()})
    for key in wanted - loaded.stored.keys() - loaded.errors.keys():
        loaded.errors[key] = f"{shard}:{key}: no '{member}' member in the shard"
    features = _features(task, feature_config)
    for key in list(loaded.stored):
        try:
            sample = decode_stored(task, loaded.stored[key], f"{shard}:{key}")
            loaded.frames[key] = _measure(task, features, sample, f"{shard}:{key}")
            if key in stats_keys:
                frames = np.asarray(features(sample), dtype=np.float64)  # (time, feat)
                loaded.count += frames.shape[0]
                total, squares = frames.sum(0), (frames**2).sum(0)
                loaded.total = total if loaded.total is None else loaded.total + total
                loaded.squares = squares if loaded.squares is None else loaded.squares + squares
        except (InkError, ImageError) as error:
            loaded.errors[key] = str(error)
        except Exception as error:  # one odd sample must not stop the load; it is reported and skipped
            loaded.errors[key] = f"{shard}:{key}: {type(error).__name__}: {error}"
        if key in loaded.errors:
            del loaded.stored[key]
            loaded.frames.pop(key, None)
    return loaded


def _single_thread() -> None:
    torch.set_num_threads(1)  # forked children must not enter the parent's OpenMP pool


def load_samples(
    utterances: list[Utterance],
    task: str,
    feature_config,
    workers: int = 1,
    stats_samples: int = 0,
    seed: int = 0,
) -> Loaded:
    """Read every utterance's stored sample from its shard and measure its feature frames; with
    `stats_samples`, also sum the frames of that many randomly chosen samples for normalisation."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    loaded = Loaded({}, {}, {})
    for utterance in utterances:
        if utterance.shard:
            by_shard[utterance.shard].append(utterance.key)
        else:
            loaded.errors[utterance.key] = f"{utterance.source}: handwriting manifests name a shard and a key"
    chosen = np.random.default_rng(seed).permutation(len(utterances))[:stats_samples]
    stats_keys = {utterances[i].key for i in chosen}
    jobs = [(task, feature_config, shard, keys, stats_keys & set(keys)) for shard, keys in by_shard.items()]
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(
            min(workers, len(jobs)), initializer=_single_thread
        ) as pool:
            for part in pool.imap_unordered(_read_shard, jobs):
                loaded.add(part)
    else:
        for job in jobs:
            loaded.add(_read_shard(job))
    return loaded


def preflight_samples(
    utterances: list[Utterance], loaded: Loaded, vocab: Vocab, stack: int, max_frames: int = 0
) -> tuple[list[Utterance], list[Problem]]:
    """Keep the samples training can use: readable, with a transcript, in the vocabulary, long enough
    for CTC after the model's frame stacking (`stack` 0: no such check, for evaluation), and (when
    `max_frames`) not longer than that many frames."""
    kept, problems = [], []
    for utterance in utterances:
        reason = None
        unknown = vocab.unknown_chars(utterance.text)
        if utterance.key in loaded.errors:
            reason = f"unreadable sample: {loaded.errors[utterance.key]}"
        elif not utterance.text.strip():
            reason = EMPTY_TRANSCRIPT
        elif unknown:
            reason = f"characters outside the vocabulary: {''.join(sorted(unknown))!r}"
        else:
            frames = loaded.frames[utterance.key]
            needed = ctc_frames_needed(vocab.encode(utterance.text))
            if stack and frames // stack < needed:
                reason = f"too short for its transcript: {frames // stack} output frames, CTC needs {needed}"
            elif max_frames and frames > max_frames:
                reason = f"longer than data.max_frames ({frames} > {max_frames} frames)"
        if reason:
            problems.append(Problem(utterance.key, utterance.source, reason))
        else:
            kept.append(utterance)
    return kept, problems


class HandwritingDataset(torch.utils.data.Dataset):
    """Item (index, epoch[, copy]) -> ((time, feat) normalised frames, label ids); `augment` (a writer or paper
    config) perturbs training items. A perturbation that would leave too few frames for CTC is dropped."""

    def __init__(
        self,
        task: str,
        utterances: list[Utterance],
        stored: dict[str, bytes],
        frame_counts: dict[str, int],
        vocab: Vocab,
        features: StrokeFeatures | ImageFeatures,
        cmvn: CMVN,
        augment: WriterAugmentConfig | PaperAugmentConfig | None = None,
        seed: int = 0,
        stack: int = 1,
    ):
        self.task, self.utterances, self.stored, self.frame_counts = task, utterances, stored, frame_counts
        self.vocab, self.features, self.cmvn, self.augment, self.seed = vocab, features, cmvn, augment, seed
        self.labels = [torch.tensor(vocab.encode(u.text), dtype=torch.long) for u in utterances]
        self.min_frames = [stack * ctc_frames_needed(label.tolist()) for label in self.labels]

    def __len__(self) -> int:
        return len(self.utterances)

    def num_frames(self) -> list[int]:
        return [self.frame_counts[u.key] for u in self.utterances]

    def input(self, index: int) -> Ink | np.ndarray:
        utterance = self.utterances[index]
        return decode_stored(self.task, self.stored[utterance.key], utterance.source)

    def frames(self, index: int, epoch: int | None = None, copy: int = 0) -> torch.Tensor:
        sample = self.input(index)
        frames = None
        if self.augment is not None and epoch is not None:
            rng = np.random.default_rng(
                (self.seed, epoch, index, copy) if copy else (self.seed, epoch, index)
            )
            if rng.random() < self.augment.prob:
                try:
                    frames = self.perturbed(sample, rng)
                except (InkError, ImageError):  # a perturbation past the input limits: train on it as it is
                    frames = None
                if frames is not None and frames.shape[0] < self.min_frames[index]:
                    frames = None
        if frames is None:
            frames = self.features(sample)
        return self.cmvn(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)))

    def perturbed(self, sample: Ink | np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.task == "ink":
            return self.features.perturbed(sample, WriterStyle.draw(rng, self.augment.strength), rng)
        frames = self.features(degrade(sample, PaperStyle.draw(rng, self.augment.strength), rng))
        if self.augment.stretch > 0:
            frames = stretch_width(frames.T, float(np.exp(rng.normal(0, self.augment.stretch)))).T
        return frames

    def __getitem__(self, item: tuple[int, ...] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch, *copy = item if isinstance(item, tuple) else (item, None)
        return self.frames(index, epoch, *copy), self.labels[index]
