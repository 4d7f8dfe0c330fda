"""The one training and evaluation dataset, for every modality: inputs kept in memory in their compact
stored form, turned into normalised feature frames per item, perturbed for training.

Perturbations are seeded by (seed, epoch, index[, copy]), so a resumed run sees the ones it would have
seen. A perturbation that leaves too few frames for CTC is dropped (the input is used as it is)."""

from __future__ import annotations

import numpy as np
import torch

from recog.datasets.manifest import Utterance
from recog.datasets.preflight import ctc_frames_needed
from recog.features.cmvn import CMVN
from recog.modalities import Modality
from recog.vocab import Vocab


class RecognitionDataset(torch.utils.data.Dataset):
    """Item (index, epoch[, copy]) -> ((time, feat) normalised frames, label ids); `augment` (the
    modality's perturbation config) perturbs training items, None leaves them as they are."""

    def __init__(
        self,
        modality: Modality,
        utterances: list[Utterance],
        stored: dict,
        frame_counts: dict[str, int],
        vocab: Vocab,
        cmvn: CMVN,
        augment=None,
        seed: int = 0,
        stack: int = 1,
    ):
        self.modality, self.utterances, self.stored, self.frame_counts = (
            modality,
            utterances,
            stored,
            frame_counts,
        )
        self.vocab, self.cmvn, self.augment, self.seed = vocab, cmvn, augment, seed
        self.labels = [torch.tensor(vocab.encode(u.text), dtype=torch.long) for u in utterances]
        self.min_frames = [stack * ctc_frames_needed(label.tolist()) for label in self.labels]

    @property
    def features(self):
        return self.modality.features

    def __len__(self) -> int:
        return len(self.utterances)

    def num_frames(self) -> list[int]:
        return [self.frame_counts[u.key] for u in self.utterances]

    def input(self, index: int):
        """The reader's output for item `index` (waveform, Ink, ink map)."""
        utterance = self.utterances[index]
        return self.modality.restore(self.stored[utterance.key], utterance.source)

    def frames(self, index: int, epoch: int | None = None, copy: int = 0) -> torch.Tensor:
        sample = self.input(index)
        if self.augment is not None and epoch is not None:
            rng = np.random.default_rng(
                (self.seed, epoch, index, copy) if copy else (self.seed, epoch, index)
            )
            frames = self.modality.augmented(sample, self.augment, rng, self.cmvn, self.min_frames[index])
            if frames is not None:
                return frames
        return self.cmvn(self.modality.frames(sample, self.utterances[index].source))

    def __getitem__(self, item: tuple[int, ...] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch, *copy = item if isinstance(item, tuple) else (item, None)
        return self.frames(index, epoch, *copy), self.labels[index]


def worker_init(_: int) -> None:
    torch.set_num_threads(1)
