"""Length-bucketed batches (padding-aware frame budget), SortaGrad, resumable position, DDP shares."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


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


class BucketBatchSampler(torch.utils.data.Sampler):
    """Yields batches of (index, epoch) pairs; the epoch lets worker processes seed augmentation."""

    def __init__(
        self,
        lengths: list[int],
        batch_frames: int,
        max_batch: int = 64,
        seed: int = 0,
        shuffle: bool = True,
        sortagrad: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        self.lengths, self.batch_frames, self.max_batch = list(lengths), batch_frames, max_batch
        self.seed, self.shuffle, self.sortagrad = seed, shuffle, sortagrad
        self.rank, self.world_size = rank, world_size
        self.epoch, self.position = 0, 0

    def batches_for(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng((self.seed, epoch))
        lengths = np.asarray(self.lengths, dtype=np.float64)
        if self.shuffle:  # jitter lengths by up to 10% so buckets differ between epochs
            lengths = lengths * rng.uniform(0.95, 1.05, size=len(lengths))
        order = np.argsort(lengths, kind="stable").tolist()
        batches = make_batches(self.lengths, order, self.batch_frames, self.max_batch)
        if self.shuffle and not (self.sortagrad and epoch == 0):
            batches = [batches[i] for i in rng.permutation(len(batches))]
        usable = len(batches) - len(batches) % self.world_size if self.world_size > 1 else len(batches)
        return batches[self.rank : usable : self.world_size]

    def __len__(self) -> int:
        return len(self.batches_for(self.epoch))

    def __iter__(self) -> Iterator[list[tuple[int, int]]]:
        batches = self.batches_for(self.epoch)
        for batch in batches[self.position :]:
            self.position += 1
            yield [(index, self.epoch) for index in batch]

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
