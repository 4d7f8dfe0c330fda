"""Length-bucketed batches (padding-aware frame budget), SortaGrad, resumable position, DDP shares."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import numpy as np
import torch

from recog.config import ConfigError


def make_batches(lengths: list[int], order: list[int], batch_frames: int, max_batch: int) -> list[list[int]]:
    """Cut an ordering (shortest first) into batches whose padded size stays within `batch_frames`."""
    batches, current, longest = [], [], 0
    for index in order:
        length = lengths[index]
        if current and (
            max(longest, length) * (len(current) + 1) > batch_frames or len(current) >= max_batch
        ):
            batches.append(current)
            current, longest = [], 0
        current.append(index)
        longest = max(longest, length)
    if current:
        batches.append(current)
    return batches


def oversample_factors(utterances: list, spec: dict[str, float]) -> list[float] | None:
    """Per training utterance, its `data.oversample` factor: the largest of the "FIELD=VALUE" entries it
    matches (manifest fields), 1 where none match; None without entries."""
    if not spec:
        return None
    rules = []
    for rule, factor in spec.items():
        name, sep, value = rule.partition("=")
        if not sep or not name.strip():
            raise ConfigError(f"data.oversample: {rule!r} is not FIELD=VALUE")
        if factor < 0:
            raise ConfigError(f"data.oversample.{rule}: factor must be non-negative, got {factor}")
        rules.append((name.strip(), value.strip(), float(factor)))
    factors, matched = [], set()
    for utterance in utterances:
        hits = [rule for rule in rules if str(utterance.info.get(rule[0], "")) == rule[1]]
        matched.update(hits)
        factors.append(max((factor for _, _, factor in hits), default=1.0))
    # A field no item has is a typo; a value none has may be an optional voice that is not installed.
    fields = {name for utterance in utterances for name in utterance.info}
    unknown = [f"{name}={value}" for name, value, factor in rules if name not in fields]
    if unknown:
        raise ConfigError(f"data.oversample: no training item has {', '.join(unknown)}")
    for name, value, factor in rules:
        if (name, value, factor) not in matched:
            warnings.warn(f"data.oversample: no training item has {name}={value} (rule unused)", stacklevel=2)
    return factors


class BucketBatchSampler(torch.utils.data.Sampler):
    """Yields batches of (index, epoch) pairs; the epoch lets worker processes seed augmentation.

    `repeats` (one factor per item, default 1) oversamples: an item with factor 2.5 appears twice in
    every epoch and a third time in half of them. Its extra copies come as (index, epoch, copy), so
    each copy gets its own augmentation draw."""

    def __init__(
        self,
        lengths: list[int],
        batch_frames: int,
        max_batch: int = 64,
        seed: int = 0,
        shuffle: bool = True,
        sortagrad: bool = False,
        sortagrad_share: float = 1.0,
        rank: int = 0,
        world_size: int = 1,
        repeats: list[float] | None = None,
    ):
        self.lengths, self.batch_frames, self.max_batch = list(lengths), batch_frames, max_batch
        if repeats is not None and (len(repeats) != len(self.lengths) or min(repeats, default=1.0) < 0):
            raise ValueError("repeats: expected one non-negative factor per item")
        self.repeats = None if repeats is None or all(r == 1 for r in repeats) else np.asarray(repeats, float)
        if not 0.0 <= sortagrad_share <= 1.0:
            raise ValueError(
                f"train.sortagrad_share: expected a share between 0 and 1, got {sortagrad_share}"
            )
        self.seed, self.shuffle, self.sortagrad = seed, shuffle, sortagrad
        self.sortagrad_share = sortagrad_share
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def batches_for(self, epoch: int) -> list[list[int]]:
        """This rank's batches of epoch `epoch`: dataset indices, or (index, copy) pairs when oversampling."""
        rng = np.random.default_rng((self.seed, epoch))
        sizes = self.lengths
        if self.repeats is not None:
            counts = np.floor(self.repeats).astype(np.int64)
            counts += rng.random(len(counts)) < self.repeats - counts
            sizes = np.repeat(np.asarray(self.lengths), counts).tolist()
        lengths = np.asarray(sizes, dtype=np.float64)
        if self.shuffle:  # jitter lengths by up to 10% so buckets differ between epochs
            lengths = lengths * rng.uniform(0.95, 1.05, size=len(lengths))
        order = np.argsort(lengths, kind="stable").tolist()
        batches = make_batches(sizes, order, self.batch_frames, self.max_batch)
        if self.repeats is not None:  # item numbers -> (index, copy), kept for `__iter__`
            index = np.repeat(np.arange(len(counts)), counts)
            first = np.concatenate(([0], np.cumsum(counts)[:-1]))
            copy = np.arange(len(index)) - np.repeat(first, counts)
            batches = [[(int(index[i]), int(copy[i])) for i in batch] for batch in batches]
        if self.shuffle:
            # sortagrad: the first epoch opens with its shortest batches (a `sortagrad_share` of them, in
            # ascending order), then the rest come shuffled, so a run shorter than an epoch still sees
            # the longest inputs
            sorted_head = (
                math.ceil(self.sortagrad_share * len(batches)) if self.sortagrad and epoch == 0 else 0
            )
            rest = batches[sorted_head:]
            batches = batches[:sorted_head] + [rest[i] for i in rng.permutation(len(rest))]
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return len(self.batches_for(self.epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self.batches_for(self.epoch)
        for batch in batches[self.position :]:
            self.position += 1
            yield [self.item(entry) for entry in batch]

    def item(self, entry: int | tuple[int, int]) -> tuple[int, ...]:
        """(index, epoch) for an item's first copy in an epoch, (index, epoch, copy) for the others."""
        if isinstance(entry, tuple):
            index, copy = entry
            return (index, self.epoch) if copy == 0 else (index, self.epoch, copy)
        return (entry, self.epoch)

    def next_epoch(self) -> None:
        self.epoch += 1
        self.position = 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def collate(items: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Pad (time, feat) frames and concatenate label ids; returns a dict of batch tensors."""
    frames = [item[0] for item in items]
    labels = [item[1] for item in items]
    lengths = torch.tensor([f.shape[0] for f in frames])
    padded = torch.zeros(len(frames), int(lengths.max()), frames[0].shape[1])  # (batch, time, feat)
    for row, item in enumerate(frames):
        padded[row, : item.shape[0]] = item
    return {
        "frames": padded,
        "lengths": lengths,
        "labels": torch.cat(labels) if labels else torch.zeros(0, dtype=torch.long),
        "label_lengths": torch.tensor([len(label) for label in labels]),
    }
