"""Speech: audio files -> MFCC or log-mel frames; kept in memory as int16 samples; an output frame is a
stretch of time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recog.audio import AUDIO_SUFFIXES, AudioError, read_audio
from recog.config import FeatureConfig
from recog.datasets.shards import from_int16, to_int16
from recog.features.cmvn import CMVN
from recog.features.speech import Perturbation, SpeechFeatures, spec_augment
from recog.modalities.base import Loaded, Located, Modality


class Speech(Modality):
    name = "speech"
    suffixes = AUDIO_SUFFIXES
    kind = "an audio file"
    items = "utterances"
    member = "flac"
    app = "recog transcribe"
    group_by = "voice"
    feature_section = "features"
    augment_section = "augment"
    feature_types = (SpeechFeatures, FeatureConfig)
    error = AudioError
    unreadable = "unreadable audio"
    timed = True
    unit = "seconds"

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    @staticmethod
    def pack(path: Path, sample_rate: int) -> tuple[dict[str, bytes], dict[str, object]]:
        from recog.datasets.importers.convert import audio_sample

        return audio_sample(path, sample_rate)

    def read(self, source: str | Path | bytes, name: str | None = None) -> np.ndarray:
        return read_audio(source, self.sample_rate, name=name)

    def store_file(self, path: str) -> np.ndarray:
        return to_int16(read_audio(path, self.sample_rate))

    def store_member(self, data: bytes, name: str) -> np.ndarray:
        return to_int16(read_audio(data, self.sample_rate, name=name))

    def restore(self, stored: np.ndarray, name: str = "<stored>") -> np.ndarray:
        return from_int16(stored)

    def frame_count(self, sample: np.ndarray, name: str) -> int:
        return 1 + sample.shape[0] // self.config.hop_length

    def frame_seconds(self, stack: int) -> float:
        return self.config.hop_length * stack / self.sample_rate

    def normaliser(self, loaded: Loaded) -> CMVN:
        return loaded.sums.cmvn(self.config.cmvn)

    def augmented(self, sample, augment, rng, cmvn: CMVN, min_frames: int) -> torch.Tensor:
        """Speed, tract length, noise, reverb and channel perturbation, then SpecAugment masks."""
        perturbation = Perturbation.draw(augment, self.features.n_bins, rng)
        frames = cmvn(self.features.perturbed(sample, perturbation, rng))
        return spec_augment(frames, augment, rng)

    def too_long(self, stored: np.ndarray, frames: int, data) -> str | None:
        seconds = stored.shape[0] / self.sample_rate
        if data.max_duration and seconds > data.max_duration:
            return f"longer than data.max_duration ({seconds:.1f} s > {data.max_duration} s)"
        return None

    def place(self, samples: np.ndarray, name: str | None = None) -> Located:
        frames = self.frames(samples, name)
        places = np.arange(frames.shape[0]) * self.config.hop_length  # each frame's first sample
        seconds = samples.shape[0] / self.sample_rate
        return Located(frames, places, {"seconds": round(seconds, 3), "extent": (0, samples.shape[0])})

    def draw(self, sample: np.ndarray, chars: list[dict], words: list[dict], png: Path, title: str) -> None:
        from recog.plots import plot_spectrogram

        plot_spectrogram(np.asarray(sample), self.sample_rate, words, png, title)

    def to_input(self, position: float, places: np.ndarray, extent: tuple[int, int]) -> int:
        """A frame boundary -> a sample index."""
        return int(min(max(round(position * self.config.hop_length), extent[0]), extent[1]))
