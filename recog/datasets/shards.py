"""Loading utterance audio from webdataset shards (or plain files) into memory, in parallel."""

from __future__ import annotations

import multiprocessing
from collections import defaultdict

import numpy as np
import webdataset

from recog.audio import AudioError, read_audio
from recog.datasets.manifest import Utterance


def _read_shard(job: tuple[str, list[str], int]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    shard, keys, rate = job
    wanted, audio, errors = set(keys), {}, {}
    try:
        dataset = webdataset.WebDataset(
            shard, shardshuffle=False, empty_check=False, nodesplitter=_every_shard
        )
        for sample in dataset:
            key = sample["__key__"]
            if key not in wanted:
                continue
            if "flac" not in sample:
                errors[key] = f"{shard}:{key}: sample has no 'flac' member"
                continue
            try:
                audio[key] = to_int16(read_audio(sample["flac"], rate, name=f"{shard}:{key}"))
            except AudioError as error:
                errors[key] = str(error)
    except Exception as error:  # a torn or unreadable tar loses only the keys not read yet
        reason = f"{shard}: unreadable shard ({type(error).__name__}: {error})"
        errors.update({key: reason for key in wanted - audio.keys() - errors.keys()})
    errors.update(
        {key: f"{shard}:{key}: not found in shard" for key in wanted - audio.keys() - errors.keys()}
    )
    return audio, errors


def _every_shard(urls):
    """Each process reads what it asks for; DDP ranks split batches, not shards."""
    yield from urls


def _read_files(job: tuple[list[tuple[str, str]], int]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    items, rate = job
    audio, errors = {}, {}
    for key, path in items:
        try:
            audio[key] = to_int16(read_audio(path, rate))
        except AudioError as error:
            errors[key] = str(error)
    return audio, errors


def _single_thread() -> None:
    """Forked children must not enter the parent's OpenMP pool (it deadlocks); one thread each."""
    import torch

    torch.set_num_threads(1)


def to_int16(samples: np.ndarray) -> np.ndarray:
    """Compact in-memory storage: half the size of float32, lossless for 16-bit sources."""
    return (np.clip(samples, -1.0, 1.0) * 32767.0).round().astype(np.int16)


def from_int16(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float32) / 32767.0


def load_audio(
    utterances: list[Utterance], sample_rate: int, workers: int = 1
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Decode every utterance's audio; returns (key -> int16 samples, key -> error message)."""
    by_shard: dict[str, list[str]] = defaultdict(list)
    files = []
    for utterance in utterances:
        if utterance.shard:
            by_shard[utterance.shard].append(utterance.key)
        else:
            files.append((utterance.key, utterance.audio))
    jobs = [(_read_shard, (shard, keys, sample_rate)) for shard, keys in by_shard.items()]
    chunk = max(1, len(files) // max(1, workers * 4))
    jobs += [(_read_files, (files[i : i + chunk], sample_rate)) for i in range(0, len(files), chunk)]
    audio: dict[str, np.ndarray] = {}
    errors: dict[str, str] = {}
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(
            min(workers, len(jobs)), initializer=_single_thread
        ) as pool:
            results = [pool.apply_async(function, (job,)) for function, job in jobs]
            for result in results:
                got, failed = result.get()
                audio.update(got)
                errors.update(failed)
    else:
        for function, job in jobs:
            got, failed = function(job)
            audio.update(got)
            errors.update(failed)
    return audio, errors
