"""`recog align`: forced alignment of a known text to one input, as JSON, CTM or SRT.

Speech gets each word's and character's start and end in seconds; ink the points [start, end) in
document order and line images the pixel columns [start, end), as `recog read` gives them. The text
is first written with the model's characters (`normalise_text`: case folded, accents and curly
apostrophes mapped, dashes become spaces); what it had to drop is named in the output (`dropped`)
and on stderr. Output to a file is written whole and renamed into place, and never replaces an
existing file unless asked (`force`).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from recog.audio import AudioError
from recog.decode.align import AlignError, check_alignable, force_align, labels_for, normalise_text, viterbi
from recog.decode.transcript import Transcript, Word, cues, timestamp
from recog.image import ImageError
from recog.ink import InkError

FORMATS = ("json", "ctm", "srt")
MAX_TEXT_BYTES = 1_000_000  # a transcript file larger than this is refused before it is read
INPUT_ERRORS = (AlignError, AudioError, InkError, ImageError)


@dataclass
class AlignOptions:
    format: str = "json"  # json | ctm | srt
    output: str | None = None  # a file to write; None: the caller prints the result
    force: bool = False  # replace an existing output file
    words_per_cue: int = 0  # srt: words per cue; 0: cues split at pauses and length, as transcribe does


def read_text(path: str) -> str:
    """A UTF-8 transcript file; AlignError naming the file when it is missing, too large or not text."""
    file = Path(path)
    try:
        size = file.stat().st_size
        if not file.is_file():
            raise AlignError(f"{path}: not a regular file")
        if size > MAX_TEXT_BYTES:
            raise AlignError(f"{path}: text file of {size:,} bytes; at most {MAX_TEXT_BYTES:,} are aligned")
        return file.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise AlignError(f"{path}: text file not found") from None
    except PermissionError:
        raise AlignError(f"{path}: permission denied") from None
    except UnicodeDecodeError as error:
        raise AlignError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
    except OSError as error:
        raise AlignError(f"{path}: cannot read ({error.strerror or error})") from None


def align_input(recognizer, path: str, text: str, text_name: str = "text") -> dict:
    """The alignment record of one input file and its text (see the module docstring)."""
    if getattr(recognizer, "text", None):  # the checkpoint's own rules first (case, punctuation, ...)
        text = recognizer.text(text)
    written, dropped = normalise_text(text, recognizer.vocab)
    if not written:
        what = f" (all of it outside the model's characters: {dropped!r})" if dropped else ""
        raise AlignError(f"{text_name}: the text is empty{what}")
    labels = labels_for(written, recognizer.vocab, text_name)
    stack = recognizer.model.config.stack
    if recognizer.modality.timed:
        samples = recognizer.modality.read(path)
        frames = recognizer.frames(samples)
        check_alignable(frames.shape[0] // stack, labels, path)  # before the model runs
        log_probs = recognizer.forward([frames])[0]
        found = force_align(log_probs, written, recognizer.vocab, recognizer.frame_seconds, path)
        duration = round(len(samples) / recognizer.features.config.sample_rate, 3)
        for item in (*found["chars"], *found["words"]):  # the last output frame may reach past the audio
            item["start"], item["end"] = min(item["start"], duration), min(item["end"], duration)
        facts = {"duration": duration}
        chars, words, log_prob = found["chars"], found["words"], found["log_prob"]
    else:
        from recog.read import char_positions, load_input, words_of

        frames, places, facts = load_input(recognizer, path)
        check_alignable(frames.shape[0] // stack, labels, path)
        log_probs = recognizer.forward([frames])[0]
        scores = log_probs.numpy()
        check_alignable(len(scores), labels, path)
        found = viterbi(scores, labels)
        if found is None:
            raise AlignError(f"{path}: no CTC path spells the text (the model gives it zero probability)")
        log_prob = round(found[1] / max(len(scores), 1), 4)
        chars = char_positions(
            log_probs, written, recognizer.vocab, stack, places, facts["extent"], recognizer.modality
        )
        words = words_of(chars)
        facts = {key: value for key, value in facts.items() if key != "extent"}
    return {
        "path": path,
        "model": f"{recognizer.task}:{recognizer.model_id}",
        "unit": recognizer.modality.unit,
        **facts,
        "text": written,
        "dropped": dropped,
        "log_prob": log_prob,
        "words": words,
        "chars": chars,
    }


# ---------------------------------------------------------------- formats
def to_ctm(record: dict) -> str:
    """NIST CTM, one line per word: `<utt> 1 <start> <duration> <word> <confidence>`."""
    utterance = Path(record["path"]).stem.replace(" ", "_") or "utt"
    return "".join(
        f"{utterance} 1 {word['start']:.3f} {word['end'] - word['start']:.3f} {word['word']} "
        f"{word['confidence']:.4f}\n"
        for word in record["words"]
    )


def to_srt(record: dict, words_per_cue: int = 0) -> str:
    """SubRip cues: `words_per_cue` words each, or (0) split at pauses and by length as transcribe does."""
    words = [Word(w["word"], w["start"], w["end"], w["confidence"]) for w in record["words"]]
    if words_per_cue > 0:
        groups = [words[i : i + words_per_cue] for i in range(0, len(words), words_per_cue)]
        spans = [(group[0].start, group[-1].end, " ".join(w.word for w in group)) for group in groups]
    else:
        spans = cues(Transcript(record["text"], words=words).words)
    return "\n".join(
        f"{number}\n{timestamp(start)} --> {timestamp(end)}\n{text}\n"
        for number, (start, end, text) in enumerate(spans, start=1)
    )


def render(record: dict, options: AlignOptions) -> str:
    import json

    if options.format == "json":
        return json.dumps(record, ensure_ascii=False, indent=1) + "\n"
    if record["unit"] != "seconds":
        raise AlignError(
            f"{record['path']}: --format {options.format} needs times, and a {record['unit']} model gives "
            f"{record['unit']}: use --format json"
        )
    return to_ctm(record) if options.format == "ctm" else to_srt(record, options.words_per_cue)


def check_output(path: str, force: bool) -> None:
    """Refuse, before any work, an output that is a folder, in no folder, or an existing file without
    `force`: a user's file is never replaced silently."""
    target = Path(path)
    if target.is_dir():
        raise AlignError(f"-o {path}: is a folder")
    if not target.parent.is_dir():
        raise AlignError(f"-o {path}: folder {target.parent} does not exist")
    if (target.exists() or target.is_symlink()) and not force:
        raise AlignError(f"-o {path}: already exists; pass --force to replace it")


def write_output(content: str, path: str, force: bool) -> None:
    """Write `content` to a temporary file beside `path` and rename it into place (atomic)."""
    check_output(path, force)
    target = Path(path)
    handle, partial = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(content)
        if target.exists() and not force:  # appeared while we worked
            raise AlignError(f"-o {path}: already exists; pass --force to replace it")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)


def run(recognizer, path: str, text: str, options: AlignOptions, text_name: str = "text") -> tuple[dict, str]:
    """Align, render and (with `options.output`) write: (record, rendered text)."""
    if options.format not in FORMATS:
        raise AlignError(f"unknown format {options.format!r}: expected one of {', '.join(FORMATS)}")
    if options.format != "json" and not recognizer.modality.timed:
        raise AlignError(
            f"--format {options.format} needs a speech model; this {recognizer.task} model gives "
            f"{recognizer.modality.unit}: use --format json"
        )
    if options.output:
        check_output(options.output, options.force)
    record = align_input(recognizer, path, text, text_name)
    content = render(record, options)
    if options.output:
        write_output(content, options.output, options.force)
    return record, content
