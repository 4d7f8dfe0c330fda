"""One input file -> the shard members training reads (speech `flac`, ink `ink.npz`, line image `png`)
and the manifest fields measured on the way (duration, size). Runs in worker processes."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image, ImageOps

from recog.audio import AudioError, encode_flac, read_audio, wav_shortfall
from recog.image import ImageError, read_image
from recog.ink import InkError, encode_ink, read_ink

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ConvertError(Exception):
    """An input that cannot become a sample: the message names the file and the reason; `kind` is short."""

    def __init__(self, message: str, kind: str):
        super().__init__(message, kind)  # both in args: the error crosses process boundaries (pickle)
        self.message, self.kind = message, kind

    def __str__(self) -> str:
        return self.message


def mp3_supported() -> bool:
    """libsndfile decodes MP3 from version 1.1.0 on (soundfile >= 0.12 wheels bundle such a build)."""
    return "MP3" in soundfile.available_formats()


def mp3_missing(path: Path) -> str:
    return (
        f"{path}: cannot decode MP3: this soundfile's libsndfile ({soundfile.__libsndfile_version__}) "
        "was built without MP3 support; install soundfile >= 0.12 from its pip wheel (libsndfile >= 1.1.0), "
        "or convert the clips to FLAC/WAV first"
    )


def audio_sample(path: Path, sample_rate: int) -> tuple[dict[str, bytes], dict[str, object]]:
    """Mono FLAC at `sample_rate`; a FLAC that already is one is copied byte for byte after a full decode."""
    if path.suffix.lower() == ".mp3" and not mp3_supported():
        raise ConvertError(mp3_missing(path), "no mp3 support")
    try:
        if path.is_file() and path.stat().st_size == 0:
            raise AudioError(f"{path}: empty file (0 bytes)")
        shortfall = wav_shortfall(path)
        if shortfall:
            raise AudioError(
                f"{path}: truncated WAV (header declares {shortfall[0]} bytes, {shortfall[1]} present)"
            )
        samples = read_audio(path, sample_rate, name=str(path))
        info = soundfile.info(str(path))
    except AudioError as error:
        raise ConvertError(str(error), "unreadable audio") from None
    except (soundfile.LibsndfileError, RuntimeError) as error:
        raise ConvertError(
            f"{path}: not a readable audio file (soundfile: {error})", "unreadable audio"
        ) from None
    as_is = info.format == "FLAC" and info.subtype == "PCM_16" and info.channels == 1
    if as_is and info.samplerate == sample_rate:
        data = path.read_bytes()
    else:
        data = encode_flac(np.clip(samples, -1.0, 1.0), sample_rate)
    return {"flac": data}, {"duration": round(len(samples) / sample_rate, 3)}


def ink_sample(path: Path) -> tuple[dict[str, bytes], dict[str, object]]:
    """IAM-OnDB / InkML / JSON strokes -> the compact ink.npz the corpus maker writes too."""
    try:
        ink = read_ink(path)
    except InkError as error:
        raise ConvertError(str(error), "unreadable ink") from None
    fields: dict[str, object] = {"strokes": len(ink.strokes), "points": ink.num_points}
    if ink.times is not None:
        times = np.concatenate(ink.times)
        fields["duration"] = round(float(times.max() - times.min()), 3)
    return {"ink.npz": encode_ink(ink)}, fields


def image_sample(path: Path) -> tuple[dict[str, bytes], dict[str, object]]:
    """A PNG is stored as it is; other formats are decoded once and stored as lossless PNG."""
    try:
        ink_map = read_image(path)  # the check training will make: decodable, within the size limits
        data = path.read_bytes()
        if not data.startswith(_PNG_SIGNATURE):
            data = _to_png(path)
    except ImageError as error:
        raise ConvertError(str(error), "unreadable image") from None
    except OSError as error:
        raise ConvertError(f"{path}: cannot read ({error.strerror or error})", "unreadable image") from None
    height, width = ink_map.shape
    return {"png": data}, {"width": int(width), "height": int(height)}


def _to_png(path: Path) -> bytes:
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image)  # PNG keeps no EXIF orientation: apply it to the pixels
        if image.mode not in ("1", "L", "LA", "P", "RGB", "RGBA", "I", "I;16"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
    return buffer.getvalue()


def convert(job: tuple[str, str, int]) -> tuple[dict[str, bytes], dict[str, object]] | ConvertError:
    """(task, path, sample_rate) -> (members, fields), or the ConvertError (returned, not raised, so
    that a worker pool hands it back like a result)."""
    from recog.modalities import MODALITIES

    task, name, sample_rate = job
    path = Path(name)
    try:
        return MODALITIES[task].pack(path, sample_rate)
    except ConvertError as error:
        return error
    except Exception as error:  # one odd input must not end the import; it is reported and skipped
        return ConvertError(f"{path}: {type(error).__name__}: {error}", "unreadable input")
