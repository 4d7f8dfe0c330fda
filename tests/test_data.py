"""Batching, collate, manifests, webdataset shards, datasets and preflight."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import webdataset

from recog.audio import encode_flac
from recog.config import AugmentConfig, ConfigError, DataConfig, FeatureConfig, load_config
from recog.datasets.batching import BucketBatchSampler, collate, make_batches, oversample_factors
from recog.datasets.dataset import RecognitionDataset
from recog.datasets.manifest import ManifestError, Utterance, read_manifest
from recog.datasets.preflight import ctc_frames_needed, preflight, write_report
from recog.datasets.shards import from_int16, load_audio, to_int16
from recog.features.speech import CMVN, SpeechFeatures
from recog.modalities import Speech
from recog.vocab import Vocab

RNG_LENGTHS = np.random.default_rng(7).integers(40, 400, size=173).tolist()


def epoch_indices(sampler: BucketBatchSampler, epoch: int) -> list[int]:
    return [index for batch in sampler.batches_for(epoch) for index in batch]


# -- BucketBatchSampler ----------------------------------------------------------------------------
def test_every_index_exactly_once_per_epoch_within_the_frame_budget():
    sampler = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=3)
    for epoch in range(3):
        batches = sampler.batches_for(epoch)
        assert sorted(epoch_indices(sampler, epoch)) == list(range(len(RNG_LENGTHS)))
        for batch in batches:
            padded = max(RNG_LENGTHS[i] for i in batch) * len(batch)
            assert padded <= 1600
            assert 1 <= len(batch) <= 8


def test_make_batches_cuts_only_when_the_next_item_would_not_fit():
    order = sorted(range(len(RNG_LENGTHS)), key=RNG_LENGTHS.__getitem__)
    batches = make_batches(RNG_LENGTHS, order, batch_frames=1600, max_batch=8)
    assert [i for batch in batches for i in batch] == order  # order kept, nothing lost
    for batch, following in zip(batches, batches[1:], strict=False):
        grown = batch + following[:1]
        assert len(grown) > 8 or max(RNG_LENGTHS[i] for i in grown) * len(grown) > 1600


def test_make_batches_keeps_an_overlong_item_alone():
    assert make_batches([10, 500, 10], [0, 2, 1], batch_frames=100, max_batch=4) == [[0, 2], [1]]


def test_sortagrad_first_epoch_is_ascending_then_shuffled():
    sampler = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=0, sortagrad=True)
    first = sampler.batches_for(0)
    # lengths are jittered by at most 5% to vary the buckets, so "ascending" holds up to that jitter
    for earlier, later in zip(first, first[1:], strict=False):
        assert max(RNG_LENGTHS[i] for i in earlier) * 0.95 <= min(RNG_LENGTHS[i] for i in later) * 1.05
    batch_means = [np.mean([RNG_LENGTHS[i] for i in batch]) for batch in first]
    assert batch_means[0] < batch_means[len(batch_means) // 2] < batch_means[-1]

    second = sampler.batches_for(1)
    assert second != first
    second_means = [np.mean([RNG_LENGTHS[i] for i in batch]) for batch in second]
    assert second_means != sorted(second_means)  # no longer shortest-first
    assert sampler.batches_for(1) == second  # but reproducible

    plain = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=0, sortagrad=False)
    plain_means = [np.mean([RNG_LENGTHS[i] for i in batch]) for batch in plain.batches_for(0)]
    assert plain_means != sorted(plain_means)


def test_sortagrad_share_opens_with_the_shortest_batches_then_shuffles_the_rest():
    full = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=0, sortagrad=True)
    part = BucketBatchSampler(
        RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=0, sortagrad=True, sortagrad_share=0.25
    )
    ascending, first = full.batches_for(0), part.batches_for(0)
    head = math.ceil(0.25 * len(ascending))
    assert first[:head] == ascending[:head]  # the same shortest batches, in the same order
    assert sorted(map(sorted, first)) == sorted(map(sorted, ascending))  # the epoch holds every item once
    rest_means = [np.mean([RNG_LENGTHS[i] for i in batch]) for batch in first[head:]]
    assert rest_means != sorted(rest_means)  # the longer three quarters come shuffled
    # a run that stops right after the sorted head has already met longer inputs than the head's
    assert max(RNG_LENGTHS[i] for i in first[head]) > max(RNG_LENGTHS[i] for i in first[head - 1])
    assert part.batches_for(0) == first and part.batches_for(1) == full.batches_for(1)
    with pytest.raises(ValueError, match="sortagrad_share"):
        BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, sortagrad=True, sortagrad_share=1.5)


def test_iteration_follows_epochs_and_yields_index_epoch_pairs():
    sampler = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=1)
    first = list(sampler)
    assert [[i for i, _ in batch] for batch in first] == sampler.batches_for(0)
    assert {epoch for batch in first for _, epoch in batch} == {0}
    assert len(sampler) == len(first)
    sampler.next_epoch()
    second = list(sampler)
    assert {epoch for batch in second for _, epoch in batch} == {1}
    assert [[i for i, _ in batch] for batch in second] == sampler.batches_for(1)


def test_state_dict_resumes_at_the_same_batch():
    original = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=5)
    original.next_epoch()  # mid-way through epoch 1
    iterator = iter(original)
    for _ in range(4):
        next(iterator)
    state = original.state_dict()
    assert state == {"epoch": 1, "position": 4}
    rest = list(iterator)

    resumed = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=5)
    resumed.load_state_dict(state)
    assert list(resumed) == rest
    resumed.next_epoch()
    assert resumed.state_dict() == {"epoch": 2, "position": 0}


def test_ddp_ranks_get_disjoint_equal_shares():
    shares = [
        BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=2, rank=rank, world_size=2)
        for rank in (0, 1)
    ]
    whole = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=2)
    for epoch in (0, 1):
        rank0, rank1 = (share.batches_for(epoch) for share in shares)
        assert len(rank0) == len(rank1) > 0  # same number of steps, or DDP would hang
        seen0 = {i for batch in rank0 for i in batch}
        seen1 = {i for batch in rank1 for i in batch}
        assert not seen0 & seen1
        all_batches = whole.batches_for(epoch)
        assert len(rank0) + len(rank1) >= len(all_batches) - 1  # at most one batch left out per epoch
        assert sorted(map(tuple, rank0 + rank1)) == sorted(map(tuple, all_batches[: 2 * len(rank0)]))


# -- collate -------------------------------------------------------------------------------------
def test_oversampling_repeats_items_by_their_factor_with_distinct_copies():
    factors = [3.0 if i % 10 == 0 else 0.5 if i % 10 == 1 else 1.0 for i in range(len(RNG_LENGTHS))]
    sampler = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=3, repeats=factors)
    halves = []
    for epoch in range(4):
        sampler.epoch, sampler.position = epoch, 0
        items = [item for batch in sampler for item in batch]
        for batch in sampler.batches_for(epoch):
            assert max(RNG_LENGTHS[entry[0]] for entry in batch) * len(batch) <= 1600
        counts = np.bincount([item[0] for item in items], minlength=len(RNG_LENGTHS))
        assert all(counts[i] == 3 for i in range(0, len(RNG_LENGTHS), 10))
        assert all(counts[i] == 1 for i in range(len(RNG_LENGTHS)) if i % 10 > 1)
        halves.append(sum(counts[i] for i in range(1, len(RNG_LENGTHS), 10)))
        copies = {item for item in items if item[0] == 0}  # index 0: factor 3
        assert copies == {(0, epoch), (0, epoch, 1), (0, epoch, 2)}  # each copy seeds its own augmentation
    assert 0 < sum(halves) < 4 * len(range(1, len(RNG_LENGTHS), 10))  # factor 0.5: about every other epoch
    same = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=3, repeats=factors)
    assert same.batches_for(2) == sampler.batches_for(2)  # a resumed run draws the same epoch
    ones = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=3, repeats=[1.0] * 173)
    plain = BucketBatchSampler(RNG_LENGTHS, batch_frames=1600, max_batch=8, seed=3)
    assert ones.batches_for(1) == plain.batches_for(1)


def test_oversample_factors_match_manifest_fields_and_name_rules_that_match_nothing():
    config = load_config(None, ['data.oversample={"engine=piper": 3, "voice=flite:kal16": 1.5}'])
    assert config.data.oversample == {"engine=piper": 3.0, "voice=flite:kal16": 1.5}
    utterances = [
        Utterance("a", "x", info={"engine": "piper", "voice": "piper:joe"}),
        Utterance("b", "x", info={"engine": "flite", "voice": "flite:kal16"}),
        Utterance("c", "x", info={"engine": "espeak", "voice": "espeak:en-us"}),
    ]
    assert oversample_factors(utterances, config.data.oversample) == [3.0, 1.5, 1.0]
    assert oversample_factors(utterances, {}) is None
    with pytest.raises(ConfigError, match="no training item has engin=piper"):  # a field none has: a typo
        oversample_factors(utterances, {"engin=piper": 2.0})
    # a value none has (an optional voice not installed here) is a warning, and the rest still apply
    with pytest.warns(UserWarning, match="no training item has engine=kokoro"):
        assert oversample_factors(utterances, {"engine=kokoro": 2.0, "engine=piper": 3}) == [3.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="'piper' is not FIELD=VALUE"):
        oversample_factors(utterances, {"piper": 2.0})
    with pytest.raises(ConfigError, match="data.oversample: expected a mapping"):
        load_config(None, ["data.oversample=[piper]"])


def test_collate_pads_frames_and_concatenates_labels():
    items = [
        (torch.ones(5, 3), torch.tensor([3, 4])),
        (torch.full((2, 3), 2.0), torch.tensor([5])),
        (torch.full((4, 3), 3.0), torch.tensor([6, 7, 8])),
    ]
    batch = collate(items)
    assert batch["frames"].shape == (3, 5, 3)
    assert batch["lengths"].tolist() == [5, 2, 4]
    assert batch["labels"].tolist() == [3, 4, 5, 6, 7, 8]
    assert batch["label_lengths"].tolist() == [2, 1, 3]
    assert torch.all(batch["frames"][1, :2] == 2.0) and torch.all(batch["frames"][1, 2:] == 0.0)
    assert torch.all(batch["frames"][2, 4:] == 0.0)


# -- manifests -----------------------------------------------------------------------------------
def test_read_manifest_resolves_paths_and_keeps_extra_fields(tmp_path):
    (tmp_path / "sub").mkdir()
    manifest = tmp_path / "sub" / "train.jsonl"
    lines = [
        {
            "key": "a",
            "text": "hello",
            "duration": 1.5,
            "shard": "shards/train-0000.tar",
            "voice": "espeak:en",
        },
        {},
        {"text": "there", "audio": "../clips/b.wav"},
    ]
    manifest.write_text("\n".join(json.dumps(line) if line else "" for line in lines) + "\n")
    first, second = read_manifest(manifest)
    assert first == Utterance(
        key="a",
        text="hello",
        duration=1.5,
        shard=str(tmp_path / "sub" / "shards" / "train-0000.tar"),
        info={"voice": "espeak:en"},
    )
    assert first.source == f"{tmp_path}/sub/shards/train-0000.tar:a"
    assert second.audio == str(tmp_path / "clips" / "b.wav") and second.key == "../clips/b.wav"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"text": "hi", "audio": "a.wav"', "not valid JSON"),
        ('{"audio": "a.wav"}', "expected an object with 'text'"),
        ('["text"]', "expected an object with 'text'"),
        ('{"text": "hi"}', "needs 'audio'"),
    ],
)
def test_manifest_errors_name_file_and_line(tmp_path, bad_line, reason):
    manifest = tmp_path / "dev.jsonl"
    manifest.write_text('{"text": "ok", "audio": "a.wav"}\n\n' + bad_line + "\n")
    with pytest.raises(ManifestError) as error:
        read_manifest(manifest)
    assert str(error.value).startswith(f"{manifest}:3: ")
    assert reason in str(error.value)
    with pytest.raises(ManifestError, match="manifest not found"):
        read_manifest(tmp_path / "missing.jsonl")


# -- audio from webdataset shards and files ---------------------------------------------------------------
@pytest.fixture
def shard_corpus(tmp_path, speak):
    """A real webdataset shard: two spoken utterances, one with garbage flac bytes, one without audio."""
    good = {"one": speak("one two three"), "two": speak("good morning")}
    shard = tmp_path / "shards" / "train-0000.tar"
    shard.parent.mkdir()
    with webdataset.TarWriter(str(shard)) as writer:
        for key, samples in good.items():
            writer.write({"__key__": key, "flac": encode_flac(samples), "json": {"text": key}})
        writer.write({"__key__": "broken", "flac": b"this is not flac at all" * 10, "json": {"text": "x"}})
        writer.write({"__key__": "silent", "json": {"text": "no audio member"}})
    return shard, good


def test_load_audio_from_a_real_shard_and_files(tmp_path, shard_corpus, speak):
    shard, good = shard_corpus
    speak("a file on disk", name="clip.wav")
    utterances = [
        Utterance(key=key, text=key, shard=str(shard)) for key in ("one", "two", "broken", "silent", "absent")
    ] + [
        Utterance(key="clip", text="a file on disk", audio=str(tmp_path / "clip.wav")),
        Utterance(key="lost", text="gone", audio=str(tmp_path / "lost.wav")),
    ]
    for workers in (1, 2):
        audio, errors = load_audio(utterances, 16000, workers=workers)
        assert sorted(audio) == ["clip", "one", "two"]
        assert sorted(errors) == ["absent", "broken", "lost", "silent"]
        for key, samples in good.items():
            assert audio[key].dtype == np.int16
            # flac is 16-bit: what comes back is the spoken audio to within one quantisation step
            np.testing.assert_allclose(from_int16(audio[key]), samples, atol=2 / 32767)
        assert f"{shard}:broken" in errors["broken"] and "not a readable audio file" in errors["broken"]
        assert f"{shard}:silent" in errors["silent"] and "no 'flac'" in errors["silent"]
        assert f"{shard}:absent: not found in shard" == errors["absent"]
        assert errors["lost"].startswith(f"{tmp_path / 'lost.wav'}: ")


def test_shards_load_in_every_rank_of_a_distributed_run(shard_corpus, monkeypatch):
    shard, good = shard_corpus
    utterances = [Utterance(key=key, text=key, shard=str(shard)) for key in good]
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    audio, errors = load_audio(utterances, 16000)
    assert errors == {}
    assert sorted(audio) == sorted(good)  # every rank needs all the audio: it is split by batches, not shards


def test_a_torn_shard_keeps_the_samples_before_the_tear(tmp_path, speak):
    keys = ["s0", "s1", "s2", "s3"]
    shard = tmp_path / "torn-0000.tar"
    with webdataset.TarWriter(str(shard)) as writer:
        for key in keys:
            writer.write({"__key__": key, "flac": encode_flac(speak(f"sample {key}")), "json": {"text": key}})
    data = shard.read_bytes()
    last_flac = data.rindex(b"s3.flac")
    shard.write_bytes(data[: last_flac + 2000])  # cut inside the last sample's audio
    utterances = [Utterance(key=key, text=key, shard=str(shard)) for key in keys]
    audio, errors = load_audio(utterances, 16000)  # no exception: the damage is reported per key
    assert set(audio) | set(errors) == set(keys) and not set(audio) & set(errors)
    assert {"s0", "s1"} <= set(audio)
    assert "s3" in errors and errors["s3"].startswith(f"{shard}")
    assert all(str(shard) in message for message in errors.values())


def test_int16_storage_round_trip():
    samples = np.linspace(-1.2, 1.2, 101).astype(np.float32)
    restored = from_int16(to_int16(samples))
    np.testing.assert_allclose(restored, np.clip(samples, -1, 1), atol=1 / 32767)


# -- dataset ---------------------------------------------------------------------------------------
def test_speech_dataset_augments_reproducibly_per_epoch(speak):
    features = SpeechFeatures(FeatureConfig())
    audio = {"a": to_int16(speak("hello there")), "b": to_int16(speak("one two"))}
    utterances = [Utterance("a", "hello there", audio="a.wav"), Utterance("b", "one two", audio="b.wav")]
    cmvn = CMVN.fit("global", [features(from_int16(samples)) for samples in audio.values()])
    vocab = Vocab.speech()
    speech = Speech(features)
    frames = {key: 1 + samples.shape[0] // 160 for key, samples in audio.items()}
    train = RecognitionDataset(speech, utterances, audio, frames, vocab, cmvn, AugmentConfig(), seed=4)
    plain, labels = train[0]
    assert labels.tolist() == vocab.encode("hello there")
    torch.testing.assert_close(plain, cmvn(features(from_int16(audio["a"]))))  # no epoch: no augmentation
    assert train.num_frames() == [1 + audio[key].shape[0] // 160 for key in ("a", "b")]
    first, _ = train[(0, 0)]
    again, _ = train[(0, 0)]
    other_epoch, _ = train[(0, 1)]
    torch.testing.assert_close(first, again)  # a resumed run sees the same perturbation
    assert not torch.equal(first, other_epoch)
    copy, _ = train[(0, 0, 1)]  # an oversampled item's second copy in the same epoch
    assert not torch.equal(first, copy)
    evaluation = RecognitionDataset(speech, utterances, audio, frames, vocab, cmvn)
    torch.testing.assert_close(evaluation[(0, 3)][0], plain)  # dev/test never augmented


# -- preflight -------------------------------------------------------------------------------------
def test_ctc_frames_needed_counts_blanks_between_repeats():
    vocab = Vocab.speech()
    assert ctc_frames_needed(vocab.encode("abc")) == 3
    assert ctc_frames_needed(vocab.encode("hello")) == 6
    assert ctc_frames_needed(vocab.encode("aaa")) == 5
    assert ctc_frames_needed([]) == 0


def test_preflight_reports_each_broken_sample_with_its_reason_and_keeps_the_rest(tmp_path, speak):
    vocab = Vocab.speech()
    samples = {"good": speak("good morning"), "fine": speak("one two three")}
    samples["short"] = samples["good"][:1600]  # 0.1 s of audio for a whole sentence
    samples["shouty"] = samples["fine"]
    samples["long"] = np.concatenate([samples["good"]] * 4)
    shard = tmp_path / "dev-0000.tar"
    with webdataset.TarWriter(str(shard)) as writer:
        for key, audio in samples.items():
            writer.write({"__key__": key, "flac": encode_flac(audio)})
        writer.write({"__key__": "garbled", "flac": b"\x00garbage" * 50})
    texts = {
        "good": "good morning",
        "short": "a sentence far too long for a tenth of a second",
        "shouty": "One Two Three!",
        "garbled": "fine text",
        "fine": "one two three",
        "long": "good morning good morning good morning good morning",
    }
    utterances = [Utterance(key, text, shard=str(shard)) for key, text in texts.items()]
    speech = Speech(SpeechFeatures(FeatureConfig()))
    loaded = speech.load(utterances)
    stack = 3
    duration_limit = 3.0
    assert samples["long"].shape[0] / 16000 > duration_limit > samples["good"].shape[0] / 16000

    data = DataConfig(max_duration=duration_limit)
    kept, problems = preflight(utterances, loaded, vocab, speech, stack=stack, data=data)
    assert [u.key for u in kept] == ["good", "fine"]
    reasons = {problem.key: problem.reason for problem in problems}
    assert sorted(reasons) == ["garbled", "long", "short", "shouty"]
    assert reasons["shouty"] == "characters outside the vocabulary: '!OT'"
    assert reasons["short"].startswith("too short for its transcript: 3 output frames, CTC needs")
    assert reasons["garbled"].startswith("unreadable audio: ") and f"{shard}:garbled" in reasons["garbled"]
    assert reasons["long"].startswith("longer than data.max_duration")
    assert {problem.source for problem in problems} == {f"{shard}:{key}" for key in reasons}

    summary = write_report(problems, len(utterances), tmp_path / "report" / "preflight-dev.jsonl", "dev")
    assert (summary["set"], summary["total"], summary["skipped"]) == ("dev", 6, 4)
    assert summary["by_reason"]["too short for its transcript"] == 1
    assert summary["by_reason"]["characters outside the vocabulary"] == 1
    assert summary["by_reason"]["unreadable audio"] == 1
    assert sum(summary["by_reason"].values()) == 4
    lines = (tmp_path / "report" / "preflight-dev.jsonl").read_text().splitlines()
    assert json.loads(lines[0])["skipped"] == 4
    assert {json.loads(line)["key"] for line in lines[1:]} == set(reasons)

    # without a duration limit (evaluation sets) the long utterance is kept
    kept, problems = preflight(utterances, loaded, vocab, speech, stack=stack)
    assert [u.key for u in kept] == ["good", "fine", "long"]
