"""Building the training, dev and evaluation sets from a corpus folder (JSONL manifests + shards), for
speech (audio) and handwriting (ink, line images) alike."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

from recog.config import Config, DataConfig
from recog.datasets.dataset import RecognitionDataset
from recog.datasets.manifest import Utterance, read_manifest
from recog.datasets.preflight import Problem, preflight, write_report
from recog.modalities import Loaded, Modality
from recog.text import TextConfig, corpus_chars
from recog.vocab import Vocab


class CorpusError(Exception):
    """The corpus a config names is missing and cannot be built."""


def prepare_corpus(data: DataConfig) -> Path:
    """Run `data.prepare`, which owns the corpus cache: it returns at once when the corpus is complete
    and was built with the same parameters and generator version, and rebuilds it otherwise.
    Without a prepare command the corpus must already exist."""
    root = Path(data.root)
    if not data.prepare and ((root / "DONE").exists() or (root / data.train).exists()):
        return root
    if not data.prepare:
        raise CorpusError(
            f"{root}: corpus not found and the config gives no data.prepare command to build it"
        )
    command = shlex.split(data.prepare.format(root=root))
    if command and command[0] in ("python", "python3"):
        command[0] = sys.executable
    print(f"[data] corpus: {' '.join(command)}", file=sys.stderr, flush=True)
    result = subprocess.run(command)
    if result.returncode != 0:
        raise CorpusError(f"{root}: corpus build failed (exit {result.returncode}): {' '.join(command)}")
    return root


def _workers() -> int:
    return max(1, min(os.cpu_count() or 1, 4))


def _load_set(
    config: Config, modality: Modality, manifest: str, out_dir: Path, vocab: Vocab, for_training: bool
) -> tuple[list[Utterance], Loaded, dict]:
    """One manifest's usable utterances after preflight, their loaded inputs (with, for training, the
    frame sums of a random 2000 for the normalisation statistics), and the preflight summary."""
    utterances = normalised(read_manifest(Path(config.data.root) / manifest), config.text)
    stats = 2000 if for_training else 0
    loaded = modality.load(utterances, _workers(), stats, config.train.seed)
    kept, problems = preflight(
        utterances,
        loaded,
        vocab,
        modality,
        stack=config.model.stack if for_training else 0,
        data=config.data if for_training else None,
    )
    summary = _report(problems, len(utterances), out_dir, Path(manifest).stem)
    return kept, loaded, summary


def _report(problems: list[Problem], total: int, out_dir: Path, name: str) -> dict:
    """Write preflight-NAME.jsonl and tell the user what was skipped and why."""
    summary = write_report(problems, total, out_dir / f"preflight-{name}.jsonl", name)
    if problems:
        print(
            f"[preflight] {name}: skipped {len(problems)} of {total} samples "
            f"({', '.join(f'{n} {k}' for k, n in summary['by_reason'].items())}); "
            f"details in {out_dir / f'preflight-{name}.jsonl'}",
            file=sys.stderr,
        )
        for problem in problems[:5]:
            print(f"[preflight]   {problem.source}: {problem.reason}", file=sys.stderr)
    return summary


def _kept(utterances: list[Utterance], loaded: Loaded) -> dict:
    return {u.key: loaded.stored[u.key] for u in utterances}


def prepare_sets(config: Config, out_dir: Path, vocab: Vocab, modality: Modality, context) -> dict:
    """Train and dev datasets after preflight, normalisation statistics from train, and the LM text."""
    train, loaded, train_summary = _load_set(config, modality, config.data.train, out_dir, vocab, True)
    dev, dev_loaded, dev_summary = _load_set(config, modality, config.data.dev, out_dir, vocab, False)
    if not train:
        raise CorpusError(
            f"{config.data.root}/{config.data.train}: no usable training samples (see preflight report)"
        )
    if not dev:
        raise CorpusError(
            f"{config.data.root}/{config.data.dev}: no usable dev samples (see preflight report): "
            "model selection needs at least one"
        )
    if context.main:
        (out_dir / "preflight.json").write_text(
            json.dumps({"train": train_summary, "dev": dev_summary}, indent=2)
        )
    cmvn = modality.normaliser(loaded)
    sentences = [u.text for u in train]
    if config.data.lm_text:
        extra = Path(config.data.root) / config.data.lm_text
        sentences += [config.text(line) for line in extra.read_text().splitlines() if line.strip()]
    common = dict(vocab=vocab, cmvn=cmvn, stack=config.model.stack)
    augment = getattr(config, modality.augment_section)
    return {
        "train": RecognitionDataset(
            modality,
            train,
            _kept(train, loaded),
            loaded.frames,
            augment=augment,
            seed=config.train.seed,
            **common,
        ),
        "dev": RecognitionDataset(modality, dev, _kept(dev, dev_loaded), dev_loaded.frames, **common),
        "cmvn": cmvn,
        "lm_sentences": sentences,
    }


def load_eval_set(
    config: Config, manifest: str, out_dir: Path, vocab: Vocab, modality: Modality
) -> tuple[list[Utterance], dict]:
    """(utterances, key -> stored input: int16 audio, or ink/png bytes) of one evaluation manifest."""
    utterances, loaded, _ = _load_set(config, modality, manifest, out_dir, vocab, False)
    return utterances, _kept(utterances, loaded)


def load_manifest_inputs(
    modality: Modality, manifest: str | Path, vocab: Vocab, workers: int = 2, text: TextConfig | None = None
) -> tuple[list[Utterance], dict, list[Problem]]:
    """Any manifest for evaluation outside training (`recog eval`, `recog lm tune`): usable utterances
    (transcripts normalised by the model's `text` rules), their stored inputs, and what was skipped
    (unreadable, characters outside the vocabulary)."""
    utterances = normalised(read_manifest(manifest), text)
    loaded = modality.load(utterances, workers)
    kept, problems = preflight(utterances, loaded, vocab, modality)
    return kept, _kept(kept, loaded), problems


def normalised(utterances: list[Utterance], text: TextConfig | None) -> list[Utterance]:
    """The utterances with their transcripts normalised by `text` (None: as they are)."""
    if text is None:
        return utterances
    return [dataclasses.replace(u, text=text(u.text)) for u in utterances]


def training_vocab(config: Config) -> Vocab:
    """The characters a model of `config` writes: the built-in set, or (text.vocab: corpus) every
    character of the normalised training transcripts."""
    if config.text.vocab == "default":
        return Vocab.default()
    utterances = normalised(read_manifest(Path(config.data.root) / config.data.train), config.text)
    return Vocab(corpus_chars(u.text for u in utterances))
