"""Pictures of a model's errors, for `recog eval --plots DIR`: per evaluation set the most frequent
character confusions (PNG, JSON, Markdown) and the worst utterances drawn with what the model read
where: a log-mel spectrogram with word boundaries (speech), the ink coloured by recognised character,
a line image with column boundaries. Boundaries come from a forced alignment of the hypothesis.

Files are written only into DIR/SET/, which must be new, empty or an earlier plots folder: a file
there is replaced only if the earlier run's `plots.json` lists it, so a person's files are never
touched.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import numpy as np

MAX_EDIT_CELLS = 4_000_000  # reference x hypothesis characters one utterance's edit alignment may take
INDEX = "plots.json"  # in each set's folder: the files this module wrote there
SPACE = "\u2423"  # how a space is shown


class PlotsError(Exception):
    """A plots folder that cannot be written without touching files recog did not write."""


# ---------------------------------------------------------------- confusions
def char_edits(reference: str, hypothesis: str) -> list[tuple[str, str]]:
    """The edits of a minimum edit-distance alignment, as (reference char, hypothesis char) pairs:
    a substitution has both, a deletion an empty hypothesis, an insertion an empty reference."""
    rows, cols = len(reference), len(hypothesis)
    cost = np.zeros((rows + 1, cols + 1), dtype=np.int32)
    cost[:, 0], cost[0, :] = np.arange(rows + 1), np.arange(cols + 1)
    for i in range(1, rows + 1):
        for j in range(1, cols + 1):
            cost[i, j] = min(
                cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]),
                cost[i - 1, j] + 1,
                cost[i, j - 1] + 1,
            )
    edits, i, j = [], rows, cols
    while i or j:  # back from the end: a match or substitution first, then a deletion, then an insertion
        if i and j and cost[i, j] == cost[i - 1, j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            if reference[i - 1] != hypothesis[j - 1]:
                edits.append((reference[i - 1], hypothesis[j - 1]))
            i, j = i - 1, j - 1
        elif i and cost[i, j] == cost[i - 1, j] + 1:
            edits.append((reference[i - 1], ""))
            i -= 1
        else:
            edits.append(("", hypothesis[j - 1]))
            j -= 1
    return edits[::-1]


def confusion_summary(pairs: list[tuple[str, str]], top: int = 15) -> dict:
    """Counts of character substitutions, deletions and insertions over (reference, hypothesis) pairs
    (spaces collapsed, as CER counts them), and the `top` most frequent of each."""
    substitutions, deletions, insertions = Counter(), Counter(), Counter()
    characters = skipped = 0
    for reference, hypothesis in pairs:
        reference, hypothesis = " ".join(reference.split()), " ".join(hypothesis.split())
        if len(reference) * len(hypothesis) > MAX_EDIT_CELLS:
            skipped += 1
            continue
        characters += len(reference)
        for ref, hyp in char_edits(reference, hypothesis):
            if ref and hyp:
                substitutions[(ref, hyp)] += 1
            elif ref:
                deletions[ref] += 1
            else:
                insertions[hyp] += 1
    return {
        "utterances": len(pairs) - skipped,
        "skipped_too_long": skipped,
        "reference_chars": characters,
        "substitutions": sum(substitutions.values()),
        "deletions": sum(deletions.values()),
        "insertions": sum(insertions.values()),
        "top_substitutions": [
            {"ref": ref, "hyp": hyp, "count": count} for (ref, hyp), count in _top(substitutions, top)
        ],
        "top_deletions": [{"char": char, "count": count} for char, count in _top(deletions, top)],
        "top_insertions": [{"char": char, "count": count} for char, count in _top(insertions, top)],
    }


def _top(counter: Counter, top: int) -> list:
    return sorted(counter.items(), key=lambda item: (-item[1], item[0]))[:top]


def _show(char: str) -> str:
    return SPACE if char == " " else char


def confusion_markdown(summary: dict, title: str) -> str:
    lines = [
        f"# Character errors: {title}",
        "",
        f"{summary['utterances']} utterances, {summary['reference_chars']} reference characters: "
        f"{summary['substitutions']} substituted, {summary['deletions']} deleted, "
        f"{summary['insertions']} inserted.",
        "",
        "| edit | count |",
        "|---|---:|",
    ]
    for row in summary["top_substitutions"]:
        lines.append(f"| `{_show(row['ref'])}` -> `{_show(row['hyp'])}` | {row['count']} |")
    for row in summary["top_deletions"]:
        lines.append(f"| `{_show(row['char'])}` deleted | {row['count']} |")
    for row in summary["top_insertions"]:
        lines.append(f"| `{_show(row['char'])}` inserted | {row['count']} |")
    return "\n".join(lines) + "\n"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusions(summary: dict, png: Path, title: str = "") -> None:
    """Horizontal bars: the most frequent substitutions, deletions and insertions, by count."""
    plt = _pyplot()
    rows = [
        (f"{_show(r['ref'])} \u2192 {_show(r['hyp'])}", r["count"], "tab:blue")
        for r in summary["top_substitutions"]
    ]
    rows += [(f"{_show(r['char'])} deleted", r["count"], "tab:red") for r in summary["top_deletions"]]
    rows += [(f"{_show(r['char'])} inserted", r["count"], "tab:green") for r in summary["top_insertions"]]
    rows.sort(key=lambda row: -row[1])
    rows = rows[:25] or [("no errors", 0, "grey")]
    figure, axes = plt.subplots(figsize=(7, 1.0 + 0.28 * len(rows)))
    axes.barh(range(len(rows)), [row[1] for row in rows], color=[row[2] for row in rows])
    axes.set_yticks(range(len(rows)), [row[0] for row in rows])
    axes.invert_yaxis()
    axes.set_xlabel("count")
    axes.set_title(
        f"{title}: {summary['substitutions']} sub, {summary['deletions']} del, {summary['insertions']} ins "
        f"in {summary['reference_chars']} chars"
    )
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------- one utterance
def _caption(reference: str, hypothesis: str) -> str:
    return f"ref: {reference}\nhyp: {hypothesis}"


def plot_spectrogram(samples: np.ndarray, rate: int, words: list[dict], png: Path, title: str = "") -> None:
    """Log-mel spectrogram with each word's start and end (seconds) marked and its text above it."""
    import librosa

    plt = _pyplot()
    hop = rate // 100
    mel = librosa.feature.melspectrogram(
        y=samples.astype(np.float32), sr=rate, n_fft=4 * hop, hop_length=hop, n_mels=80
    )
    decibels = librosa.power_to_db(mel, ref=np.max, top_db=80.0)  # (mels, frames)
    duration = len(samples) / rate
    figure, axes = plt.subplots(figsize=(min(24.0, 3.0 + 2.0 * duration), 3.6))
    axes.imshow(
        decibels, origin="lower", aspect="auto", cmap="magma", extent=(0, duration, 0, decibels.shape[0])
    )
    for number, word in enumerate(words):
        if word["start"] is None:
            continue
        colour = "cyan" if number % 2 else "white"
        axes.axvline(word["start"], color=colour, linewidth=1.2)
        axes.axvline(word["end"], color=colour, linewidth=1.2, linestyle="--")
        axes.text(
            (word["start"] + word["end"]) / 2,
            decibels.shape[0] * 0.93,
            word["word"],
            color=colour,
            ha="center",
            va="top",
            fontsize=9,
        )
    axes.set_xlabel("seconds")
    axes.set_ylabel("mel band")
    axes.set_title(title, fontsize=9, loc="left")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def plot_ink(ink, chars: list[dict], png: Path, title: str = "") -> None:
    """The strokes, each point coloured by the character whose point range [start, end) holds it,
    with the character written at the middle of its points (y down, as ink is stored)."""
    from matplotlib.collections import LineCollection

    plt = _pyplot()
    points = ink.points()
    owner = np.full(len(points), -1)
    for number, char in enumerate(chars):
        if char["start"] is not None and char["char"] != " ":
            owner[char["start"] : char["end"]] = number
    palette = plt.get_cmap("tab10")
    low, high = points.min(axis=0), points.max(axis=0)
    span = np.maximum(high - low, 1e-6)
    figure, axes = plt.subplots(figsize=(min(24.0, max(4.0, 2.5 * span[0] / span[1])), 3.0))
    start = 0
    for stroke in ink.strokes:
        ids = owner[start : start + len(stroke)]
        if len(stroke) > 1:
            segments = np.stack([stroke[:-1], stroke[1:]], axis=1)
            colours = [palette(i % 10) if i >= 0 else (0.6, 0.6, 0.6, 1.0) for i in ids[:-1]]
            axes.add_collection(LineCollection(segments, colors=colours, linewidths=2.0))
        else:
            axes.plot(*stroke.T, "o", color=palette(ids[0] % 10) if ids[0] >= 0 else "grey", markersize=2)
        start += len(stroke)
    for number, char in enumerate(chars):
        held = points[owner == number]
        if len(held):
            axes.text(
                held[:, 0].mean(),
                low[1] - 0.08 * span[1],
                char["char"],
                color=palette(number % 10),
                ha="center",
                va="bottom",
                fontsize=11,
            )
    axes.set_xlim(low[0] - 0.02 * span[0], high[0] + 0.02 * span[0])
    axes.set_ylim(high[1] + 0.05 * span[1], low[1] - 0.25 * span[1])  # y down
    axes.set_aspect("equal", adjustable="box")
    axes.axis("off")
    axes.set_title(title, fontsize=9, loc="left")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


def plot_line_image(ink_map: np.ndarray, chars: list[dict], png: Path, title: str = "") -> None:
    """The line image (ink dark on white) with each character's columns [start, end) shaded in turn,
    its boundaries drawn and the character written above."""
    plt = _pyplot()
    height, width = ink_map.shape
    figure, axes = plt.subplots(figsize=(min(24.0, max(4.0, 10.0 * width / max(height, 1) / 4)), 3.0))
    axes.imshow(1.0 - ink_map, cmap="gray", vmin=0, vmax=1, extent=(0, width, height, 0))
    palette = plt.get_cmap("tab10")
    for number, char in enumerate(chars):
        if char["start"] is None or char["char"] == " ":
            continue
        axes.axvspan(char["start"], char["end"], color=palette(number % 10), alpha=0.18, linewidth=0)
        axes.axvline(char["start"], color=palette(number % 10), linewidth=0.8)
        axes.text(
            (char["start"] + char["end"]) / 2,
            -2,
            char["char"],
            color=palette(number % 10),
            ha="center",
            va="bottom",
            fontsize=11,
        )
    axes.set_ylim(height, -0.25 * height)
    axes.set_xlabel("column")
    axes.set_yticks([])
    axes.set_title(title, fontsize=9, loc="left")
    figure.tight_layout()
    figure.savefig(png, dpi=100)
    plt.close(figure)


# ---------------------------------------------------------------- a plots folder
class PlotFolder:
    """DIR/SET/ for one set's plots; see the module docstring for what it may replace."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.ours: set[str] = set()
        self.written: list[str] = []
        if self.folder.exists() and not self.folder.is_dir():
            raise PlotsError(f"{self.folder}: exists and is not a folder")
        if self.folder.is_dir():
            names = {path.name for path in self.folder.iterdir()}
            if names and INDEX not in names:
                raise PlotsError(f"{self.folder}: not empty and not an earlier plots folder (no {INDEX})")
            if INDEX in names:
                try:
                    self.ours = set(json.loads((self.folder / INDEX).read_text())["files"]) | {INDEX}
                except (OSError, ValueError, KeyError, TypeError):
                    raise PlotsError(f"{self.folder / INDEX}: not a plots index recog wrote") from None

    def path(self, name: str) -> Path:
        """Where to write `name`; PlotsError if a file of that name is there and not ours."""
        target = self.folder / name
        if (target.exists() or target.is_symlink()) and name not in self.ours:
            raise PlotsError(f"{target}: exists and was not written by recog eval --plots")
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written.append(name)
        return target

    def finish(self) -> None:
        """Record what this run wrote (and what earlier runs wrote that is still there)."""
        keep = sorted({*self.written, *(n for n in self.ours if (self.folder / n).exists())} - {INDEX})
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / INDEX).write_text(
            json.dumps({"writer": "recog eval --plots", "files": keep}, indent=1)
        )


def safe_name(key: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", key)[:80] or "utterance"


# ---------------------------------------------------------------- recog eval --plots
def eval_plots(
    recognizer,
    utterances: list,
    stored: dict,
    folder: PlotFolder,
    title: str,
    decoder: str = "greedy",
    worst: int = 3,
) -> dict:
    """Decode a set once more (its per-utterance hypotheses) and write its confusion summary and its
    `worst` utterances by CER as pictures into `folder`; returns the summary and the files."""
    from recog.metrics import edit_distance

    inputs = [recognizer.stored_input(stored[u.key]) for u in utterances]
    log_probs = recognizer.log_probs(inputs)
    hypotheses = [h.text for h in recognizer.decode(log_probs, decoder)]
    references = [u.text for u in utterances]
    summary = confusion_summary(list(zip(references, hypotheses, strict=True)))
    folder.path("confusions.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    folder.path("confusions.md").write_text(confusion_markdown(summary, title))
    plot_confusions(summary, folder.path("confusions.png"), title)

    def rate(index: int) -> tuple[float, int]:
        reference, hypothesis = " ".join(references[index].split()), " ".join(hypotheses[index].split())
        errors = (
            edit_distance(reference, hypothesis)
            if len(reference) * len(hypothesis) <= MAX_EDIT_CELLS
            else len(reference)
        )
        return errors / max(len(reference), 1), errors

    ranked = sorted(range(len(utterances)), key=lambda i: tuple(-v for v in rate(i)))[:worst]
    for rank, index in enumerate(ranked, start=1):
        cer, _ = rate(index)
        caption = (
            f"{utterances[index].key}  CER {100 * cer:.0f}%\n{_caption(references[index], hypotheses[index])}"
        )
        png = folder.path(f"worst-{rank}-{safe_name(utterances[index].key)}.png")
        draw_utterance(recognizer, inputs[index], log_probs[index], hypotheses[index], png, caption)
    folder.finish()
    return {"summary": summary, "files": [str(folder.folder / name) for name in folder.written]}


def draw_utterance(recognizer, sample, log_probs, hypothesis: str, png: Path, title: str) -> None:
    """One input with where the model's `hypothesis` lies in it, as its modality draws it. Words the
    model's characters cannot spell (flashlight's "<unk>") are left out of the alignment."""
    from recog.decode.align import AlignError, force_align

    vocab = recognizer.vocab
    text = " ".join(word for word in hypothesis.split() if not vocab.unknown_chars(word))
    modality = recognizer.modality
    if modality.timed:
        try:
            words = force_align(log_probs, text, vocab, recognizer.frame_seconds)["words"]
        except AlignError:
            words = []
        modality.draw(sample, [], words, png, title)
        return
    from recog.read import char_positions

    located = modality.place(sample)
    extent = located.facts["extent"]
    chars = char_positions(
        log_probs, text, vocab, recognizer.model.config.stack, located.places, extent, modality
    )
    modality.draw(sample, chars, [], png, title)
