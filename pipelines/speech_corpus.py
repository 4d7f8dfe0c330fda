"""Build the generated multi-voice speech corpus: fortune sentences spoken by TTS voices, as webdataset shards.

Layout under --out DIR: shards/{split}-NNNN.tar (flac + json per sample), {split}.jsonl manifests,
corpus.json (parameters, voices, counts, speed) and DONE, written last. Dev and test voices and
sentences never occur in train.

    python -m pipelines.speech_corpus --out data/speech-corpus --preset default --hours 5
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import shutil
import signal
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from multiprocessing.pool import Pool
from pathlib import Path

import numpy as np
import soundfile
from tqdm import tqdm

from pipelines.manifest_writer import ManifestWriter
from pipelines.text import SentenceSplit, load_fortune_sentences, split_sentences_for_corpus
from pipelines.vocoder import vocode
from pipelines.voices import (
    SAMPLE_RATE,
    SynthesisError,
    Voice,
    VoiceSplit,
    default_voice_split,
    installed_optional_voices,
    synthesize,
)

GENERATOR_VERSION = 7  # bump when a change to text, voices or synthesis should invalidate cached corpora
SPLITS = ("train", "dev", "test")
SAMPLES_PER_SHARD = 1000
_SPLIT_SEED_TAG = {"train": 1, "dev": 2, "test": 3}
# Share of train utterances by non-espeak voices re-spoken through the LPC vocoder (pipelines/vocoder.py),
# so training hears the smooth envelopes and buzzy excitation of statistical parametric voices.
VOCODED_SHARE = 0.3


@dataclass(frozen=True)
class Preset:
    """Corpus size: train is `hours` of audio, or exactly `train_utterances` when hours is None."""

    min_words: int
    max_words: int
    dev_sentences: int
    test_sentences: int
    hours: float | None
    train_utterances: int | None = None


PRESETS = {
    "tiny": Preset(
        min_words=3, max_words=8, dev_sentences=10, test_sentences=10, hours=None, train_utterances=40
    ),
    "default": Preset(min_words=3, max_words=25, dev_sentences=300, test_sentences=450, hours=8.0),
}


@dataclass(frozen=True)
class Job:
    """One utterance to synthesise."""

    split: str
    index: int
    text: str
    voice: Voice
    seed: int
    vocoded: bool = False


@dataclass(frozen=True)
class Result:
    """A synthesised utterance (flac is None and error set when the engine failed)."""

    job: Job
    flac: bytes | None
    duration: float
    synth_seconds: float
    error: str | None


# ---------------------------------------------------------------- planning
def _job_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _SPLIT_SEED_TAG[split], index])


def eval_jobs(split: str, sentences: Sequence[str], voices: Sequence[Voice], seed: int) -> list[Job]:
    """Dev/test: one utterance per sentence, voices taking turns so each gets an equal share."""
    jobs = []
    for index, text in enumerate(sentences):
        rng = _job_rng(seed, split, index)
        jobs.append(Job(split, index, text, voices[index % len(voices)], int(rng.integers(2**63))))
    return jobs


def train_jobs(
    start: int, count: int, sentences: Sequence[str], voice_split: VoiceSplit, seed: int
) -> list[Job]:
    """Train utterances start..start+count: sentences in order (reused only when exhausted), random voices.

    The first utterances go once to each non-espeak voice, so even a tiny corpus hears every engine.
    """
    jobs = []
    for index in range(start, start + count):
        rng = _job_rng(seed, "train", index)
        if index < len(voice_split.train_other):
            voice = voice_split.train_other[index]
        else:
            voice = voice_split.pick_train_voice(rng)
        seed = int(rng.integers(2**63))
        vocoded = voice.engine != "espeak" and bool(rng.random() < VOCODED_SHARE)
        jobs.append(Job("train", index, sentences[index % len(sentences)], voice, seed, vocoded))
    return jobs


# ---------------------------------------------------------------- synthesis (in worker processes)
def _init_worker(scratch_dir: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and stops the pool
    # Temporary WAVs go to a folder of this run, removed at the end with any a terminated worker left.
    tempfile.tempdir = scratch_dir


def synthesize_job(job: Job) -> Result:
    """Synthesise one job into FLAC bytes; engine failures come back as a Result with `error` set."""
    started = time.perf_counter()
    try:
        rng = np.random.default_rng(job.seed)
        audio = synthesize(job.voice, job.text, rng)
        if job.vocoded:
            audio = vocode(audio, rng, SAMPLE_RATE)
    except SynthesisError as error:
        return Result(job, None, 0.0, time.perf_counter() - started, str(error))
    buffer = io.BytesIO()
    soundfile.write(buffer, audio, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
    return Result(job, buffer.getvalue(), len(audio) / SAMPLE_RATE, time.perf_counter() - started, None)


# ---------------------------------------------------------------- writing one split
class SplitWriter:
    """Writes one split's shards and manifest (pipelines/manifest_writer.py), and keeps its counts."""

    def __init__(self, root: Path, split: str) -> None:
        self.split = split
        self.output = ManifestWriter(root, split, SAMPLES_PER_SHARD)
        self.utterances = 0
        self.seconds = 0.0
        self.skipped = 0
        self.vocoded = 0
        self.texts: set[str] = set()
        self.voice_counts: dict[str, int] = defaultdict(int)
        self.engine_stats: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, result: Result) -> None:
        """Append a synthesised utterance, or count a failed one."""
        job = result.job
        stats = self.engine_stats[job.voice.engine]
        stats["synth_seconds"] += result.synth_seconds
        if result.flac is None:
            self.skipped += 1
            stats["failed"] += 1
            tqdm.write(f"skipped {job.split} #{job.index} ({result.error})", file=sys.stderr)
            return
        key = f"{self.split}-{self.utterances:06d}"
        info = {
            "text": job.text,
            "voice": job.voice.id,
            "engine": job.voice.engine,
            "duration": round(result.duration, 3),
        }
        if job.vocoded:
            info["vocoded"] = True
            self.vocoded += 1
        self.output.write(key, {"flac": result.flac}, info)
        self.utterances += 1
        self.seconds += result.duration
        self.texts.add(job.text)
        self.voice_counts[job.voice.id] += 1
        stats["utterances"] += 1
        stats["audio_seconds"] += result.duration

    def close(self) -> None:
        """Flush the last shard and the manifest."""
        self.output.close()

    def summary(self) -> dict[str, object]:
        """Counts for corpus.json."""
        return {
            "utterances": self.utterances,
            "hours": round(self.seconds / 3600, 4),
            "skipped": self.skipped,
            "vocoded": self.vocoded,
            "sentences": len(self.texts),
            "voices": dict(sorted(self.voice_counts.items())),
        }


def _write_jobs(
    pool: Pool, writer: SplitWriter, jobs: list[Job], progress: tqdm, target_seconds: float | None = None
) -> None:
    """Synthesise jobs in order into writer; with target_seconds, stop once that much audio is written."""
    for result in pool.imap(synthesize_job, jobs, chunksize=4):
        before = writer.seconds
        writer.add(result)
        progress.update(1 if target_seconds is None else round(writer.seconds) - round(before))
        attempts = writer.utterances + writer.skipped
        if writer.skipped > max(10, attempts // 2):
            raise RuntimeError(
                f"{writer.split}: {writer.skipped} of {attempts} utterances failed (see messages above): "
                "check the TTS engines by hand, e.g. espeak-ng -w /tmp/t.wav hello"
            )
        if target_seconds is not None and writer.seconds >= target_seconds:
            return


def _write_train_split(
    pool: Pool, writer: SplitWriter, sentences: list[str], voices: VoiceSplit, parameters: dict[str, object]
) -> None:
    """Synthesise train utterances in a fixed order until `hours` of audio (or the preset's count)."""
    seed, hours = parameters["seed"], parameters["hours"]
    if hours is None:
        count = parameters["train_utterances"]
        with tqdm(total=count, desc="train", unit="utt") as progress:
            _write_jobs(pool, writer, train_jobs(0, count, sentences, voices, seed), progress)
        return
    target = hours * 3600
    with tqdm(total=round(target), desc="train", unit="s audio") as progress:
        start = 0
        while writer.seconds < target:
            # Plan more than enough (2 s per utterance is short); _write_jobs stops at the target.
            count = math.ceil((target - writer.seconds) / 2.0) + 8
            _write_jobs(pool, writer, train_jobs(start, count, sentences, voices, seed), progress, target)
            start += count
    if writer.utterances > 2 * len(sentences):
        repeats = writer.utterances / len(sentences)
        print(
            f"note: {writer.utterances} train utterances from {len(sentences)} sentences (~{repeats:.1f} each)"
        )


# ---------------------------------------------------------------- the corpus
def _requested_parameters(preset: str, hours: float | None, seed: int) -> dict[str, object]:
    settings = PRESETS[preset]
    hours = hours if hours is not None else settings.hours
    train_utterances = settings.train_utterances if hours is None else None
    return {
        "preset": preset,
        "hours": hours,
        "train_utterances": train_utterances,
        "seed": seed,
        "generator_version": GENERATOR_VERSION,
        # Installed optional voices change the train voices: a corpus built without them is rebuilt.
        "optional_voices": sorted(voice.id for voice in installed_optional_voices()),
    }


def _cached_summary(out_dir: Path, parameters: dict[str, object]) -> dict[str, object] | None:
    """corpus.json of a finished corpus built with the same parameters, else None."""
    try:
        if (out_dir / "DONE").exists():
            summary = json.loads((out_dir / "corpus.json").read_text())
            if summary.get("parameters") == parameters:
                return summary
    except (OSError, ValueError):
        pass
    return None


def _remove_stale_partials(out_dir: Path) -> None:
    """Delete half-written corpora left by killed runs (their process no longer exists)."""
    for partial in out_dir.parent.glob(f".{out_dir.name}.partial-*"):
        pid = partial.name.rsplit("-", 1)[1]
        if not pid.isdigit() or not Path(f"/proc/{pid}").exists():
            shutil.rmtree(partial, ignore_errors=True)


def _speed_table(writers: Iterable[SplitWriter], wall_seconds: float, workers: int) -> dict[str, dict]:
    """Per-engine speed in utterances and audio seconds per second of one worker's time, and overall."""
    totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for writer in writers:
        for engine, stats in writer.engine_stats.items():
            for name, value in stats.items():
                totals[engine][name] += value
    table: dict[str, dict] = {}
    for engine, stats in sorted(totals.items()):
        busy = max(stats["synth_seconds"], 1e-9)
        table[engine] = {
            "utterances": int(stats["utterances"]),
            "failed": int(stats["failed"]),
            "audio_hours": round(stats["audio_seconds"] / 3600, 4),
            "utterances_per_worker_second": round(stats["utterances"] / busy, 2),
            "audio_seconds_per_worker_second": round(stats["audio_seconds"] / busy, 1),
        }
    utterances = sum(w.utterances for w in writers)
    table["all"] = {
        "utterances": utterances,
        "wall_seconds": round(wall_seconds, 1),
        "workers": workers,
        "utterances_per_second": round(utterances / max(wall_seconds, 1e-9), 2),
        "audio_seconds_per_second": round(sum(w.seconds for w in writers) / max(wall_seconds, 1e-9), 1),
    }
    return table


def build_corpus(
    out_dir: Path,
    preset: str = "default",
    hours: float | None = None,
    workers: int | None = None,
    seed: int = 0,
) -> Path:
    """Generate the corpus into out_dir (or reuse it when DONE and built with the same parameters)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown corpus preset {preset!r}: choose one of {sorted(PRESETS)}")
    if hours is not None and hours <= 0:
        raise ValueError(f"--hours must be positive, got {hours}")
    out_dir = Path(out_dir)
    parameters = _requested_parameters(preset, hours, seed)
    cached = _cached_summary(out_dir, parameters)
    if cached is not None:
        print(f"corpus cached: {out_dir} ({cached['utterances']} utterances, {cached['hours']:.2f} h)")
        return out_dir
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / "corpus.json").exists():
        raise FileExistsError(
            f"{out_dir} exists and is not a corpus made by this script: choose another --out"
        )

    settings = PRESETS[preset]
    voice_split = default_voice_split()  # raises VoiceError with what to install before any work starts
    sentences = load_fortune_sentences(settings.min_words, settings.max_words)
    text_split = split_sentences_for_corpus(sentences, settings.dev_sentences, settings.test_sentences, seed)
    workers = workers or os.cpu_count() or 1

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(out_dir)
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    (partial / "shards").mkdir(parents=True)
    scratch = tempfile.mkdtemp(prefix="recog-tts-")
    print(f"building corpus {out_dir} (preset {preset}, {workers} workers)")
    started = time.perf_counter()
    writers = {split: SplitWriter(partial, split) for split in SPLITS}
    try:
        with Pool(workers, initializer=_init_worker, initargs=(scratch,)) as pool:
            for split, voices in (("dev", voice_split.dev), ("test", voice_split.test)):
                jobs = eval_jobs(split, getattr(text_split, split), voices, seed)
                with tqdm(total=len(jobs), desc=split, unit="utt") as progress:
                    _write_jobs(pool, writers[split], jobs, progress)
            _write_train_split(pool, writers["train"], text_split.train, voice_split, parameters)
            pool.terminate()  # drop train jobs planned beyond the target
        for writer in writers.values():
            writer.close()
        wall_seconds = time.perf_counter() - started
        summary = _summarise(parameters, voice_split, writers, text_split, wall_seconds, workers)
        (partial / "corpus.json").write_text(json.dumps(summary, indent=2) + "\n")
        # Every train-pool sentence (never a dev or test one): text for the lexicon and word LM.
        (partial / "lm-text.txt").write_text("\n".join(text_split.train) + "\n")
        (partial / "DONE").write_text(time.strftime("%Y-%m-%dT%H:%M:%S\n"))
        _replace_dir(partial, out_dir)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    _print_summary(out_dir, summary)
    return out_dir


def _summarise(
    parameters: dict[str, object],
    voice_split: VoiceSplit,
    writers: dict[str, SplitWriter],
    text_split: SentenceSplit,
    wall_seconds: float,
    workers: int,
) -> dict[str, object]:
    """Everything corpus.json records: parameters, voices per split, counts, hours, speed."""
    return {
        "parameters": parameters,
        "utterances": sum(writer.utterances for writer in writers.values()),
        "hours": round(sum(writer.seconds for writer in writers.values()) / 3600, 4),
        "sample_rate": SAMPLE_RATE,
        "voices": voice_split.as_dict(),
        "sentence_pool": {name: len(getattr(text_split, name)) for name in SPLITS},
        "splits": {split: writer.summary() for split, writer in writers.items()},
        "speed": _speed_table(list(writers.values()), wall_seconds, workers),
        "generation_seconds": round(wall_seconds, 1),
    }


def _replace_dir(partial: Path, out_dir: Path) -> None:
    """Move the finished corpus into place; an older corpus at out_dir is removed only afterwards."""
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    if out_dir.exists():
        out_dir.rename(old)
    partial.rename(out_dir)
    shutil.rmtree(old, ignore_errors=True)


def _print_summary(out_dir: Path, summary: dict) -> None:
    print(f"corpus written: {out_dir} in {summary['generation_seconds']} s")
    for split in SPLITS:
        info = summary["splits"][split]
        print(
            f"  {split:8s} {info['utterances']:6d} utt {info['hours']:7.3f} h {len(info['voices']):4d} voices {info['skipped']} skipped"
        )
    for engine, speed in summary["speed"].items():
        if engine == "all":
            rates = f"{speed['utterances_per_second']:6.2f} utt/s {speed['audio_seconds_per_second']:6.1f} s audio/s"
            print(f"  overall  {rates} wall clock with {speed['workers']} workers")
        else:
            rates = f"{speed['utterances_per_worker_second']:6.2f} utt/s {speed['audio_seconds_per_worker_second']:6.1f} s audio/s"
            print(f"  {engine:8s} {rates} per worker ({speed['utterances']} utt, {speed['failed']} failed)")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: python -m pipelines.speech_corpus --out DIR --preset {tiny,default} [--workers N] [--hours H]."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="corpus folder to create (or reuse)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument(
        "--hours", type=float, default=None, help="hours of train audio (default: the preset's)"
    )
    parser.add_argument("--workers", type=int, default=None, help="synthesis processes (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        build_corpus(args.out, args.preset, args.hours, args.workers, args.seed)
    except KeyboardInterrupt:
        print("interrupted: no corpus written", file=sys.stderr)
        return 130
    except (OSError, RuntimeError, ValueError) as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
