"""Feature normalisation shared by every modality: global mean and variance from training frames,
per-input normalisation, or none. The statistics travel inside the checkpoint."""

from __future__ import annotations

import numpy as np
import torch


class CMVN:
    """Mean and variance normalisation: global statistics from training data, or per utterance."""

    def __init__(self, mode: str, mean: torch.Tensor | None = None, std: torch.Tensor | None = None):
        if mode not in ("global", "utterance", "none"):
            raise ValueError(f"features.cmvn: expected global, utterance or none, got {mode!r}")
        self.mode, self.mean, self.std = mode, mean, std

    @classmethod
    def fit(cls, mode: str, utterances: list[torch.Tensor]) -> CMVN:
        """Global statistics are always computed and saved; `mode` decides which normalisation applies."""
        sums = FrameSums()
        for frames in utterances:
            sums.add(frames)
        return sums.cmvn(mode)

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        if self.mode == "global":
            return (frames - self.mean) / self.std
        if self.mode == "utterance":
            return (frames - frames.mean(0)) / frames.std(0).clamp_min(1e-5)
        return frames

    def state(self) -> dict:
        return {"mode": self.mode, "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict) -> CMVN:
        return cls(state["mode"], state.get("mean"), state.get("std"))


class FrameSums:
    """Running count, sum and sum of squares of feature frames: global statistics gathered in pieces
    (worker processes each sum their share) and combined with `merge`."""

    def __init__(self) -> None:
        self.count, self.total, self.squares = 0, None, None

    def add(self, frames) -> None:
        frames = np.asarray(frames, dtype=np.float64)  # (time, feat)
        self.merge(frames.shape[0], frames.sum(0), (frames**2).sum(0))

    def merge(self, count: int, total: np.ndarray | None, squares: np.ndarray | None) -> None:
        if not count:
            return
        self.count += count
        self.total = total if self.total is None else self.total + total
        self.squares = squares if self.squares is None else self.squares + squares

    def cmvn(self, mode: str) -> CMVN:
        if not self.count:
            raise ValueError("no frames to compute normalisation statistics from")
        mean = self.total / self.count
        std = np.sqrt(np.maximum(self.squares / self.count - mean**2, 1e-8))
        return CMVN(mode, torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32))
