"""Online handwriting: ink files (InkML, IAM-OnDB XML, JSON) -> pen-stroke frames; kept in memory as
compact npz bytes; an output frame is a range of the input's points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recog.features.cmvn import CMVN
from recog.features.strokes import (
    StrokeFeatureConfig,
    StrokeFeatures,
    WriterStyle,
    frame_count,
    input_point_indices,
)
from recog.image import ImageError
from recog.ink import INK_EXTENSIONS, Ink, InkError, decode_ink, encode_ink, read_ink
from recog.modalities.base import Located, Modality


class InkModality(Modality):
    name = "ink"
    suffixes = INK_EXTENSIONS
    kind = "an ink file"
    items = "lines"
    member = "ink.npz"
    app = "recog read"
    group_by = "style"
    feature_section = "strokes"
    augment_section = "writer"
    feature_types = (StrokeFeatures, StrokeFeatureConfig)
    error = InkError
    unit = "points"

    @staticmethod
    def pack(path: Path, sample_rate: int) -> tuple[dict[str, bytes], dict[str, object]]:
        from recog.datasets.importers.convert import ink_sample

        return ink_sample(path)

    def read(self, source: str | Path | bytes, name: str | None = None) -> Ink:
        return read_ink(source, name=name)

    def store_file(self, path: str) -> bytes:
        return encode_ink(read_ink(path))

    def store_member(self, data: bytes, name: str) -> bytes:
        return data

    def restore(self, stored: bytes, name: str = "<stored>") -> Ink:
        return decode_ink(stored, name)

    def frame_count(self, sample: Ink, name: str) -> int:
        return frame_count(sample, self.config)  # exact, without computing the frames

    def augmented(self, sample: Ink, augment, rng, cmvn: CMVN, min_frames: int) -> torch.Tensor | None:
        """The line as another writer might have written it (slant, size, spacing, wobble, rate)."""
        if rng.random() >= augment.prob:
            return None
        try:
            frames = self.features.perturbed(sample, WriterStyle.draw(rng, augment.strength), rng)
        except (InkError, ImageError):  # a perturbation past the input limits: train on it as it is
            return None
        if frames.shape[0] < min_frames:
            return None
        return cmvn(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)))

    def place(self, ink: Ink, name: str | None = None) -> Located:
        frames, sources = self.features.frames_and_points(ink)
        places = input_point_indices(ink, sources)
        frames = torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32))
        return Located(frames, np.asarray(places), {"points": ink.num_points, "extent": (0, ink.num_points)})

    def draw(self, sample: Ink, chars: list[dict], words: list[dict], png: Path, title: str) -> None:
        from recog.plots import plot_ink

        plot_ink(sample, chars, png, title)

    def to_input(self, position: float, places: np.ndarray, extent: tuple[int, int]) -> int:
        """A frame boundary -> a point index, in document order."""
        index = int(np.floor(position + 0.5))
        return int(places[index]) if index < len(places) else extent[1]
