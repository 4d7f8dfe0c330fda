"""A folder of line images with their transcripts beside them, as kraken and PyLaia keep them:
NAME.png (or .jpg, .tif, ...) and NAME.gt.txt. Subfolders named train, dev (val, validation) and test
give the split; otherwise --dev-fraction/--test-fraction pick lines at random."""

from __future__ import annotations

from pathlib import Path

from recog.datasets.importers.base import (
    Candidate,
    Format,
    ImporterError,
    Keys,
    Options,
    Problem,
    Scan,
    normalise_text,
    walk_files,
)
from recog.image import IMAGE_EXTENSIONS

SPLIT_FOLDERS = {
    "train": "train",
    "dev": "dev",
    "val": "dev",
    "valid": "dev",
    "validation": "dev",
    "test": "test",
}
SUFFIX = ".gt.txt"


def transcript_of(image: Path) -> Path:
    """NAME.gt.txt for NAME.png; for NAME.bin.png (kraken's binarised copy) also NAME.gt.txt."""
    exact = image.with_name(image.name[: -len(image.suffix)] + SUFFIX)
    if exact.exists() or "." not in image.stem:
        return exact
    return image.with_name(image.name.split(".", 1)[0] + SUFFIX)


def scan(sources: list[Path], options: Options) -> Scan:
    keys, result = Keys(), Scan()
    for source in sources:
        if not source.is_dir():
            raise ImporterError(f"{source}: not a folder (expected line images with NAME.gt.txt transcripts)")
        matched: set[Path] = set()
        for image in walk_files(source, IMAGE_EXTENSIONS):
            relative = image.relative_to(source)
            split = SPLIT_FOLDERS.get(relative.parts[0].lower()) if len(relative.parts) > 1 else None
            transcript = transcript_of(image)
            matched.add(transcript)
            if not transcript.is_file():
                result.problems.append(
                    Problem(
                        str(image), f"missing transcript ({transcript.name} not found)", "missing transcript"
                    )
                )
                continue
            try:
                text = normalise_text(transcript.read_bytes().decode("utf-8-sig"))
            except UnicodeDecodeError as error:
                result.problems.append(
                    Problem(
                        str(transcript),
                        f"transcript is not UTF-8 ({error.reason} at byte {error.start})",
                        "bad transcript",
                    )
                )
                continue
            except OSError as error:
                result.problems.append(
                    Problem(str(transcript), f"cannot read ({error.strerror or error})", "bad transcript")
                )
                continue
            if not text:
                result.problems.append(Problem(str(transcript), "empty transcript", "empty text"))
                continue
            key, taken = keys.new(relative.as_posix().split(".", 1)[0].replace("/", "_"))
            if taken:
                result.problems.append(
                    Problem(str(image), f"a second image with this name, kept as {key}", "duplicate key")
                )
            result.candidates.append(Candidate(key, text, image, split))
        for transcript in walk_files(source, (SUFFIX,)):
            if transcript not in matched:
                result.problems.append(
                    Problem(str(transcript), "transcript without an image", "missing image")
                )
    return result


FORMAT = Format(
    "images", "image", ("writer",), scan, "folder of line images with NAME.gt.txt transcripts (kraken/PyLaia)"
)
