"""Build the synthetic handwriting corpus: fortune sentences written by random writers in Hershey
styles or along the skeletons of outline fonts (ink + a rendered line image each), plus lines rendered
with outline fonts (images only).

Layout under --out DIR: shards/{split}-NNNN.tar (per sample: ink.npz when it has ink, png, json),
{split}.jsonl (ink samples, for the online model), {split}-images.jsonl (line images, for the offline
model), lm-text.txt (train-pool sentences only), corpus.json (parameters, styles, counts, speed) and
DONE, written last. Splits: train; dev and test in held-out Hershey styles (and held-out outline font
families) with unseen sentences; dev-seen and test-seen with the same unseen sentences in training
styles, which measures sentences and writers rather than letter forms.

    python -m pipelines.ink_corpus --out data/ink-corpus --preset default
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipelines.hershey import LetterVariety, add_pen_clock, load_styles, split_styles, write_text
from pipelines.manifest_writer import ManifestWriter
from pipelines.outline_fonts import OutlineFont, ink_fonts, render_text, split_fonts
from pipelines.skeleton_ink import skeleton_ink, thin
from pipelines.speech_corpus import SAMPLES_PER_SHARD, _cached_summary, _remove_stale_partials, _replace_dir
from pipelines.text import load_fortune_sentences, split_sentences_for_corpus
from recog.features.image import PaperStyle, degrade
from recog.features.strokes import WriterStyle, perturb
from recog.image import encode_png, render_ink
from recog.ink import encode_ink

GENERATOR_VERSION = 5  # bump when a change to text, styles or synthesis should invalidate cached corpora
SPLITS = ("train", "dev", "dev-seen", "test", "test-seen")
_SPLIT_SEED_TAG = {"train": 1, "dev": 2, "test": 3, "dev-seen": 4, "test-seen": 5}


@dataclass(frozen=True)
class Preset:
    """Corpus size: `train_lines` ink lines (a `skeleton_share` of them traced from outline fonts, the
    rest Hershey) and `train_outline_lines` outline-font images."""

    min_words: int
    max_words: int
    max_chars: int
    dev_sentences: int
    test_sentences: int
    train_lines: int
    train_outline_lines: int
    skeleton_share: float = 0.0


PRESETS = {
    "tiny": Preset(
        2,
        6,
        40,
        dev_sentences=6,
        test_sentences=6,
        train_lines=40,
        train_outline_lines=12,
        skeleton_share=0.3,
    ),
    "default": Preset(
        2,
        12,
        64,
        dev_sentences=300,
        test_sentences=450,
        train_lines=40000,
        train_outline_lines=15000,
        skeleton_share=0.3,
    ),
}


@dataclass(frozen=True)
class Job:
    """One line to write: `kind` 'hershey' (styles = style names), 'skeleton' (ink traced from the font
    in styles[0], of `family`) or 'outline' (an image of that font)."""

    split: str
    index: int
    text: str
    kind: str
    styles: tuple[str, ...]
    seed: int
    family: str = ""


@dataclass
class Sample:
    job: Job
    ink: bytes | None = None
    png: bytes | None = None
    info: dict = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


# ---------------------------------------------------------------- writing one line (in workers)
def _init_worker() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool


def make_sample(job: Job) -> Sample:
    """Write one job's line; failures come back as a Sample with `error` set."""
    started = time.process_time()  # CPU time: a fair speed figure on a shared machine
    rng = np.random.default_rng(job.seed)
    try:
        if job.kind == "hershey":
            sample = _hershey_sample(job, rng)
        elif job.kind == "skeleton":
            sample = _skeleton_sample(job, rng)
        else:
            sample = _outline_sample(job, rng)
    except Exception as error:  # one odd line must not end a long build; counted and reported
        return Sample(job, error=f"{type(error).__name__}: {error}", seconds=time.process_time() - started)
    sample.seconds = time.process_time() - started
    return sample


def _stored_paper(rng: np.random.Generator) -> PaperStyle:
    """Pen, paper and scan baked into stored images; per-pixel grain is left to training-time
    perturbation (noise would triple the PNG size and is drawn afresh every epoch anyway)."""
    return replace(PaperStyle.draw(rng, 0.8), grain=0.0)


def _hershey_sample(job: Job, rng: np.random.Generator) -> Sample:
    styles = load_styles()
    writer = WriterStyle.draw(rng)
    ink, drawn = write_text(job.text, [styles[name] for name in job.styles], rng, writer=writer)
    return _ink_sample(job, ink, drawn["main_style"], drawn["styles"], {}, rng)


def _skeleton_sample(job: Job, rng: np.random.Generator) -> Sample:
    font = OutlineFont(job.styles[0], job.family)  # refuses reserved fonts by path and family
    ink = perturb(skeleton_ink(job.text, font, rng), WriterStyle.draw(rng), rng)
    letters = {job.family: sum(c != " " for c in job.text)}
    return _ink_sample(job, ink, job.family, letters, {"font": Path(font.path).name}, rng)


def _ink_sample(job: Job, ink, style: str, styles: dict, extra: dict, rng: np.random.Generator) -> Sample:
    """Pen clock, rendered image and manifest fields for a written line of ink."""
    timed, device = add_pen_clock(ink, rng)
    image = render_ink(ink, x_height_px=rng.uniform(9, 16), pen_width=rng.uniform(1.0, 3.2))
    image = degrade(image, _stored_paper(rng), rng)
    info = {
        "style": style,
        "styles": styles,
        **extra,
        "points": timed.num_points,
        "strokes": len(timed.strokes),
        "duration": round(float(timed.times[-1][-1] - timed.times[0][0]), 3),
        "width": image.shape[1],
        "height": image.shape[0],
        **device,
    }
    return Sample(job, ink=encode_ink(timed), png=encode_png(image), info=info)


def _outline_sample(job: Job, rng: np.random.Generator) -> Sample:
    font = OutlineFont(job.styles[0], job.family)  # refuses reserved fonts by path and family
    image = degrade(render_text(job.text, font, rng), _stored_paper(rng), rng)
    info = {"font": Path(font.path).name, "width": image.shape[1], "height": image.shape[0]}
    return Sample(job, png=encode_png(image), info=info)


# ---------------------------------------------------------------- planning
def _job_seed(seed: int, split: str, index: int) -> int:
    return int(np.random.default_rng([seed, _SPLIT_SEED_TAG[split], index]).integers(2**63))


# Connected (joined-up) scripts: their skeletons are drawn twice as often as a print family's, since
# most people's handwriting joins letters and these are the only sources of joined letter forms
# besides the Hershey script styles.
CONNECTED_SCRIPT_FAMILIES = ("havana", "kaushanscript", "leckerlione", "lobstertwo", "texgyrechorus", "z003")


def _font_job(split: str, index: int, text: str, kind: str, fonts, seed: int) -> Job:
    """A job in one font: a family drawn uniformly (a family of 12 faces counts once; connected scripts
    count twice for skeleton ink), then a face."""
    rng = np.random.default_rng([seed, _SPLIT_SEED_TAG[split], index, 7])
    families = sorted({font.key for font in fonts})
    weights = np.array(
        [2.0 if kind == "skeleton" and key in CONNECTED_SCRIPT_FAMILIES else 1.0 for key in families]
    )
    family = families[int(rng.choice(len(families), p=weights / weights.sum()))]
    faces = [font for font in fonts if font.key == family]
    face = faces[int(rng.integers(len(faces)))]
    return Job(split, index, text, kind, (face.path,), _job_seed(seed, split, index), face.family)


def plan_split(
    split: str,
    sentences: Sequence[str],
    count: int,
    outline_count: int,
    styles,
    fonts,
    seed: int,
    skeleton_fonts=(),
    skeleton_share: float = 0.0,
) -> list[Job]:
    """`count` ink lines (a `skeleton_share` of them, spread evenly, traced from `skeleton_fonts`, the
    rest Hershey) then `outline_count` outline lines, interleaved so all make progress; sentences in
    order, reused only when exhausted."""
    share = skeleton_share if skeleton_fonts else 0.0
    hershey = []
    for i in range(count):
        sentence = sentences[i % len(sentences)]
        if int((i + 1) * share) > int(i * share):
            hershey.append(_font_job(split, i, sentence, "skeleton", skeleton_fonts, seed))
        else:
            hershey.append(Job(split, i, sentence, "hershey", tuple(styles), _job_seed(seed, split, i)))
    outline = []
    for i in range(count, count + outline_count if fonts else count):
        sentence = sentences[(i * 7919) % len(sentences)]  # not in step with the Hershey lines
        outline.append(_font_job(split, i, sentence, "outline", fonts, seed))
    jobs: list[Job] = []
    step = max(1, len(hershey) // max(1, len(outline)))
    while hershey or outline:
        jobs += hershey[:step]
        hershey = hershey[step:]
        if outline:
            jobs.append(outline.pop(0))
    return jobs


# ---------------------------------------------------------------- writing one split
class SplitWriter:
    """One split's shards and its two manifests (ink, images) through pipelines/manifest_writer.py, and
    its counts."""

    def __init__(self, root: Path, split: str) -> None:
        self.split = split
        # {split}.jsonl lists the ink samples, {split}-images.jsonl every sample (all have a png)
        self.output = ManifestWriter(root, split, SAMPLES_PER_SHARD, extra_manifests=("images",))
        self.counts: Counter[str] = Counter()
        self.styles: Counter[str] = Counter()
        self.texts: set[str] = set()
        self.worker_seconds: Counter[str] = Counter()

    def add(self, sample: Sample) -> None:
        job = sample.job
        self.worker_seconds[job.kind] += sample.seconds
        if sample.error:
            self.counts["failed"] += 1
            tqdm.write(f"skipped {job.split} #{job.index} ({sample.error})", file=sys.stderr)
            return
        key = f"{self.split}-{job.index:06d}"
        info = {"text": job.text, "source": job.kind, **sample.info}
        if sample.ink is not None:
            self.output.write(key, {"png": sample.png, "ink.npz": sample.ink}, info)
            self.styles.update(sample.info["styles"])
        else:
            self.output.write(key, {"png": sample.png}, info, manifests=("images",))
        self.counts[job.kind] += 1
        self.texts.add(job.text)

    def close(self) -> None:
        self.output.close()

    def summary(self) -> dict:
        return {
            "ink_lines": self.counts["hershey"] + self.counts["skeleton"],
            "skeleton_ink_lines": self.counts["skeleton"],
            "outline_lines": self.counts["outline"],
            "failed": self.counts["failed"],
            "sentences": len(self.texts),
            "letters_by_style": dict(sorted(self.styles.items())),
        }


# ---------------------------------------------------------------- the corpus
def build_corpus(
    out_dir: Path,
    preset: str = "default",
    train_lines: int | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> Path:
    """Generate the corpus into out_dir (or reuse it when DONE and built with the same parameters)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown corpus preset {preset!r}: choose one of {sorted(PRESETS)}")
    settings = PRESETS[preset]
    if train_lines is not None and train_lines <= 0:
        raise ValueError(f"--train-lines must be positive, got {train_lines}")
    outline_lines = settings.train_outline_lines
    if train_lines is not None:
        outline_lines = round(train_lines * settings.train_outline_lines / settings.train_lines)
    train_lines = train_lines or settings.train_lines
    out_dir = Path(out_dir)
    parameters = {
        "preset": preset,
        "train_lines": train_lines,
        "train_outline_lines": outline_lines,
        "skeleton_share": settings.skeleton_share,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
    }
    cached = _cached_summary(out_dir, parameters)
    if cached is not None:
        print(f"corpus cached: {out_dir} ({cached['lines']} lines)")
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus.json").exists():
        raise FileExistsError(
            f"{out_dir} exists and is not a corpus made by this script: choose another --out"
        )

    styles = split_styles()
    fonts = split_fonts()
    skeleton_fonts = ink_fonts(fonts["train"]) if settings.skeleton_share > 0 else []
    thin(np.ones((3, 3), dtype=bool))  # compile the thinning once, before the workers fork
    sentences = [
        s
        for s in load_fortune_sentences(settings.min_words, settings.max_words)
        if len(s) <= settings.max_chars
    ]
    text = split_sentences_for_corpus(sentences, settings.dev_sentences, settings.test_sentences, seed)
    plans = {
        "dev": plan_split("dev", text.dev, len(text.dev), len(text.dev), styles["dev"], fonts["dev"], seed),
        "dev-seen": plan_split("dev-seen", text.dev, len(text.dev), 0, styles["train"], [], seed),
        "test": plan_split(
            "test", text.test, len(text.test), len(text.test), styles["test"], fonts["test"], seed
        ),
        "test-seen": plan_split("test-seen", text.test, len(text.test), 0, styles["train"], [], seed),
        "train": plan_split(
            "train",
            text.train,
            train_lines,
            outline_lines,
            styles["train"],
            fonts["train"],
            seed,
            skeleton_fonts,
            settings.skeleton_share,
        ),
    }
    workers = workers or os.cpu_count() or 1

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "shards").mkdir(parents=True)
    print(f"building corpus {out_dir} (preset {preset}, {workers} workers)")
    started = time.perf_counter()
    writers = {split: SplitWriter(partial, split) for split in SPLITS}
    try:
        with Pool(workers, initializer=_init_worker) as pool:  # forked after load_styles: shared
            for split in SPLITS:
                jobs, writer = plans[split], writers[split]
                with tqdm(total=len(jobs), desc=split, unit="line") as progress:
                    for sample in pool.imap(make_sample, jobs, chunksize=8):
                        writer.add(sample)
                        progress.update(1)
                        done = sum(writer.counts.values())
                        if writer.counts["failed"] > max(10, done // 2):
                            raise RuntimeError(f"{split}: {writer.counts['failed']} of {done} lines failed")
        for writer in writers.values():
            writer.close()
        wall = time.perf_counter() - started
        summary = _summarise(parameters, styles, fonts, skeleton_fonts, writers, text, wall, workers)
        (partial / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
        (partial / "lm-text.txt").write_text("\n".join(text.train) + "\n")
        (partial / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        _replace_dir(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    _print_summary(out_dir, summary)
    return out_dir


def _summarise(parameters, styles, fonts, skeleton_fonts, writers, text, wall: float, workers: int) -> dict:
    lines = sum(w.counts["hershey"] + w.counts["skeleton"] + w.counts["outline"] for w in writers.values())
    busy: Counter[str] = Counter()
    made: Counter[str] = Counter()
    for writer in writers.values():
        busy.update(writer.worker_seconds)
        made.update({k: v for k, v in writer.counts.items() if k != "failed"})
    return {
        "parameters": parameters,
        "lines": lines,
        "styles": styles,
        "outline_fonts": {split: sorted({f.family for f in group}) for split, group in fonts.items()},
        "ink_fonts": {"train": sorted({f.family for f in skeleton_fonts}), "dev": [], "test": []},
        "letter_variety": asdict(LetterVariety()),
        "sentence_pool": {"train": len(text.train), "dev": len(text.dev), "test": len(text.test)},
        "splits": {split: writer.summary() for split, writer in writers.items()},
        "speed": {
            "wall_seconds": round(wall, 1),
            "workers": workers,
            "lines_per_second": round(lines / max(wall, 1e-9), 1),
            **{
                f"{kind}_lines_per_cpu_second": round(made[kind] / max(busy[kind], 1e-9), 1)
                for kind in ("hershey", "skeleton", "outline")
            },
        },
        "generation_seconds": round(wall, 1),
    }


def _print_summary(out_dir: Path, summary: dict) -> None:
    print(f"corpus written: {out_dir} in {summary['generation_seconds']} s")
    for split in SPLITS:
        info = summary["splits"][split]
        print(
            f"  {split:10s} {info['ink_lines']:6d} ink lines ({info['skeleton_ink_lines']} from font skeletons) "
            f"{info['outline_lines']:6d} outline lines "
            f"{info['sentences']:6d} sentences {info['failed']} failed"
        )
    speed = summary["speed"]
    print(
        f"  speed: {speed['lines_per_second']} lines/s wall clock with {speed['workers']} workers; per CPU second "
        f"{speed['hershey_lines_per_cpu_second']} Hershey ink lines, {speed['skeleton_lines_per_cpu_second']} skeleton "
        f"ink lines, {speed['outline_lines_per_cpu_second']} outline lines"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: python -m pipelines.ink_corpus --out DIR --preset {tiny,default} [--train-lines N] [--workers N]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to create (or reuse)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument(
        "--train-lines", type=int, default=None, help="train ink lines (default: the preset's)"
    )
    parser.add_argument("--workers", type=int, default=None, help="worker processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        build_corpus(args.out, args.preset, args.train_lines, args.workers, args.seed)
    except KeyboardInterrupt:
        print("interrupted: no corpus written", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
