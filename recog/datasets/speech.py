"""Speech datasets over in-memory audio: features (perturbed for training), CMVN, labels."""

from __future__ import annotations

import numpy as np
import torch

from recog.config import AugmentConfig
from recog.datasets.manifest import Utterance
from recog.datasets.shards import from_int16
from recog.features.speech import CMVN, Perturbation, SpeechFeatures, spec_augment
from recog.vocab import Vocab


class SpeechDataset(torch.utils.data.Dataset):
    """Item (index, epoch[, copy]) -> ((time, feat) frames, label ids). Augmentation is seeded by
    (seed, epoch, index), so a resumed run sees the same perturbations it would have seen."""

    def __init__(
        self,
        utterances: list[Utterance],
        audio: dict[str, np.ndarray],
        vocab: Vocab,
        features: SpeechFeatures,
        cmvn: CMVN,
        augment: AugmentConfig | None = None,
        seed: int = 0,
    ):
        self.utterances, self.audio, self.vocab = utterances, audio, vocab
        self.features, self.cmvn, self.augment, self.seed = features, cmvn, augment, seed
        self.labels = [torch.tensor(vocab.encode(u.text), dtype=torch.long) for u in utterances]

    def __len__(self) -> int:
        return len(self.utterances)

    def num_frames(self) -> list[int]:
        hop = self.features.config.hop_length
        return [1 + self.audio[u.key].shape[0] // hop for u in self.utterances]

    def frames(self, index: int, epoch: int | None = None, copy: int = 0) -> torch.Tensor:
        samples = from_int16(self.audio[self.utterances[index].key])
        if self.augment is None or epoch is None:
            return self.cmvn(self.features(samples))
        rng = np.random.default_rng((self.seed, epoch, index, copy) if copy else (self.seed, epoch, index))
        perturbation = Perturbation.draw(self.augment, self.features.n_bins, rng)
        frames = self.cmvn(self.features.perturbed(samples, perturbation, rng))
        return spec_augment(frames, self.augment, rng)

    def __getitem__(self, item: tuple[int, ...] | int) -> tuple[torch.Tensor, torch.Tensor]:
        index, epoch, *copy = item if isinstance(item, tuple) else (item, None)
        return self.frames(index, epoch, *copy), self.labels[index]


def worker_init(_: int) -> None:
    torch.set_num_threads(1)
