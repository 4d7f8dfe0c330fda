"""Offline handwriting: images of text lines -> one frame per (normalised) pixel column; kept in memory
as png bytes; an output frame is a range of the image's columns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from recog.features.cmvn import CMVN
from recog.features.image import (
    ImageFeatureConfig,
    ImageFeatures,
    PaperStyle,
    column_sources,
    degrade,
    stretch_width,
)
from recog.image import IMAGE_EXTENSIONS, ImageError, read_image
from recog.ink import InkError
from recog.modalities.base import Located, Modality

MAX_IMAGE_FILE_BYTES = (
    64 * 1024 * 1024
)  # a training line image read from its own file (a 300 dpi line is ~100 KB)


class ImageModality(Modality):
    name = "image"
    suffixes = IMAGE_EXTENSIONS
    kind = "an image"
    items = "lines"
    member = "png"
    app = "recog read"
    group_by = "style,font"
    feature_section = "image"
    augment_section = "paper"
    feature_types = (ImageFeatures, ImageFeatureConfig)
    error = ImageError
    unit = "columns"

    @staticmethod
    def pack(path: Path, sample_rate: int) -> tuple[dict[str, bytes], dict[str, object]]:
        from recog.datasets.importers.convert import image_sample

        return image_sample(path)

    def read(self, source: str | Path | bytes, name: str | None = None) -> np.ndarray:
        return read_image(source, name)

    def store_file(self, path: str) -> bytes:
        size = Path(path).stat().st_size if Path(path).is_file() else -1
        if size < 0:
            raise ImageError(f"{path}: file not found")
        if size > MAX_IMAGE_FILE_BYTES:
            raise ImageError(
                f"{path}: {size} bytes, over the {MAX_IMAGE_FILE_BYTES}-byte limit for an image file"
            )
        data = Path(path).read_bytes()
        read_image(data, path)  # refuse it now, not at every epoch
        return data

    def store_member(self, data: bytes, name: str) -> bytes:
        return data

    def restore(self, stored: bytes, name: str = "<stored>") -> np.ndarray:
        return read_image(stored, name)

    def frames(self, sample: np.ndarray, name: str | None = None) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(self.features(sample, name), dtype=np.float32))

    def augmented(self, sample: np.ndarray, augment, rng, cmvn: CMVN, min_frames: int) -> torch.Tensor | None:
        """The line as another pen on other paper through another scanner might have left it."""
        if rng.random() >= augment.prob:
            return None
        try:
            frames = self.features(degrade(sample, PaperStyle.draw(rng, augment.strength), rng))
            if augment.stretch > 0:
                frames = stretch_width(frames.T, float(np.exp(rng.normal(0, augment.stretch)))).T
        except (InkError, ImageError):  # a perturbation past the input limits: train on it as it is
            return None
        if frames.shape[0] < min_frames:
            return None
        return cmvn(torch.from_numpy(np.ascontiguousarray(frames, dtype=np.float32)))

    def place(self, ink_map: np.ndarray, name: str | None = None) -> Located:
        frames = self.frames(ink_map, name)
        places, left, right = column_sources(ink_map, self.config)
        facts = {"width": ink_map.shape[1], "height": ink_map.shape[0], "extent": (left, right)}
        return Located(frames, np.asarray(places), facts)

    def draw(self, sample: np.ndarray, chars: list[dict], words: list[dict], png: Path, title: str) -> None:
        from recog.plots import plot_line_image

        plot_line_image(np.asarray(sample), chars, png, title)

    def to_input(self, position: float, places: np.ndarray, extent: tuple[int, int]) -> int:
        """A frame boundary -> a pixel column of the original image.

        Frame i spans [i, i + 1) in frame units and `places` holds the frames' centres in pixel
        coordinates, where pixel k spans [k - 0.5, k + 0.5): a boundary at x becomes the pixel edge
        nearest to it, the start of pixel floor(x + 1)."""
        step = float(places[1] - places[0]) if len(places) > 1 else 1.0
        x = places[0] - 0.5 * step + position * step
        return int(min(max(np.floor(x + 1.0), extent[0]), extent[1]))
