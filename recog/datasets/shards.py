"""Audio kept in memory as int16, and `load_audio`, the speech modality's loader under its old name."""

from __future__ import annotations

import numpy as np

from recog.datasets.manifest import Utterance


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Compact in-memory storage: half the size of float32, lossless for 16-bit sources."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def from_int16(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32767.0


def load_audio(
    utterances: list[Utterance], sample_rate: int, workers: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode every utterance's audio; returns (key -> int16 samples, key -> error message)."""
    from recog.config import FeatureConfig
    from recog.modalities import modality_for

    loaded = modality_for("speech", FeatureConfig(sample_rate=sample_rate)).load(utterances, workers)
    return loaded.stored, loaded.errors
