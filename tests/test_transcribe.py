"""Batch transcription (`recog transcribe`, `Recognizer.transcribe`): word times against known
boundaries, chunking and stitching, every sample format, bad files, resume after kill -9, sharding.

Timing is checked without a trained model: a stand-in model marks where sound starts ('a') and ends
('b'), so the words it yields are the sound segments of a file built from espeak-ng words with known
silences between them; everything else (reading, resampling, features, frame stacking, chunking,
stitching, decoding) is the real code path.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO, kill_after_lines, run_recog, subprocess_env, synthesize

from recog.audio import find_pause, read_audio
from recog.config import DecodeConfig, FeatureConfig, ModelConfig
from recog.decode.greedy import GreedyDecoder
from recog.decode.transcript import Transcript, Word, stitch, to_srt, to_vtt
from recog.features.speech import CMVN, SpeechFeatures
from recog.jobs import JobError
from recog.metrics import ErrorRate
from recog.modalities import Speech
from recog.model import CTCModel, stack_frames
from recog.recognizer import Recognizer
from recog.transcribe import BatchReader, Ledger, Options, collect_sources, merge, plan, read_records, run
from recog.vocab import Vocab

TINY = "configs/speech-tiny.yaml"
RATE = 16000
WORDS = ["morning", "yellow", "seven", "window", "garden", "river", "thunder", "paper"]
GAPS = [0.5, 0.9, 0.6, 1.4, 0.7, 1.1, 0.5, 0.8, 0.6]  # silence before each word, and after the last


# ---------------------------------------------------------------- a stand-in model: sound segments
class SegmentModel(torch.nn.Module):
    """Per output frame: 'a' where sound starts, 'b' where it ends, blank inside, space in silence.

    Sound is a log-mel band above -60 dB; gaps under 0.2 s (stop closures inside a word) are bridged."""

    def __init__(self, vocab: Vocab, threshold: float = -60.0, bridge: int = 3):
        super().__init__()
        self.config = ModelConfig(stack=3)
        self.vocab, self.threshold, self.bridge = vocab, threshold, bridge

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor):
        stacked, lengths = stack_frames(frames, lengths, 3)  # (batch, time', 3 * mels) log-mel dB
        valid = torch.arange(stacked.shape[1]).unsqueeze(0) < lengths.unsqueeze(1)  # (batch, time')
        loud = ((stacked.max(-1).values > self.threshold) & valid).float().unsqueeze(1)
        size = 2 * self.bridge + 1  # closing: dilate, then erode
        loud = -torch.nn.functional.max_pool1d(
            -torch.nn.functional.max_pool1d(loud, size, 1, self.bridge), size, 1, self.bridge
        )
        loud = (loud.squeeze(1) > 0.5) & valid  # padding is silence
        before = torch.nn.functional.pad(loud[:, :-1], (1, 0))
        after = torch.nn.functional.pad(loud[:, 1:], (0, 1))
        tokens = torch.where(loud, 0, self.vocab.tokens.index(" "))
        tokens = torch.where(loud & ~after, self.vocab.tokens.index("b"), tokens)
        tokens = torch.where(loud & ~before, self.vocab.tokens.index("a"), tokens)
        log_probs = torch.full((*tokens.shape, len(self.vocab)), -20.0)
        log_probs.scatter_(-1, tokens.unsqueeze(-1), 0.0)
        return log_probs.log_softmax(-1), lengths


@pytest.fixture(scope="module")
def segments_recognizer() -> Recognizer:
    vocab = Vocab.speech()
    features = SpeechFeatures(FeatureConfig(kind="logmel"))
    return Recognizer(SegmentModel(vocab), vocab, Speech(features), CMVN("none"), DecodeConfig(lexicon=False))


@pytest.fixture(scope="module")
def spoken_words(tmp_path_factory) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """16 kHz samples of espeak-ng words separated by digital silence, and each word's (start, end)."""
    folder = tmp_path_factory.mktemp("words")
    pieces, spans, position = [], [], 0
    for word, gap in zip(WORDS, GAPS, strict=False):
        samples = read_audio(synthesize(word, folder / f"{word}.wav"))
        sound = np.flatnonzero(np.abs(samples) > 0.01)
        samples = samples[sound[0] : sound[-1] + 1]
        pieces += [np.zeros(int(gap * RATE), np.float32), samples]
        position += int(gap * RATE)
        spans.append((position / RATE, (position + len(samples)) / RATE))
        position += len(samples)
    pieces.append(np.zeros(int(GAPS[-1] * RATE), np.float32))
    return np.concatenate(pieces), spans


def segment_times(transcript) -> list[tuple[float, float]]:
    assert all(word.word == "ab" for word in transcript.words), transcript.text
    return [(word.start, word.end) for word in transcript.words]


def assert_times(found: list[tuple[float, float]], expected: list[tuple[float, float]], tolerance=0.07):
    assert len(found) == len(expected), (found, expected)
    for (start, end), (true_start, true_end) in zip(found, expected, strict=True):
        assert abs(start - true_start) <= tolerance and abs(end - true_end) <= tolerance, (found, expected)


# ---------------------------------------------------------------- timing math, model-independent
def test_word_times_survive_chunking_and_stitching_on_hand_made_log_probs():
    vocab = Vocab.speech()
    frames = list("--ca-t---") + [" "] * 6 + list("-s-a-tt--") + [" "] * 5 + list("o--n-") + ["-"] * 3
    log_probs = torch.full((len(frames), len(vocab)), -30.0)
    for index, char in enumerate(frames):
        log_probs[index, 0 if char == "-" else vocab.tokens.index(char)] = 0.0
    log_probs = log_probs.log_softmax(-1)  # (time, vocab)
    decoder = GreedyDecoder(vocab, frame_seconds=0.03)
    whole = decoder(log_probs.unsqueeze(0), torch.tensor([len(frames)]))[0]
    assert whole.text == "cat sat on"
    # from a word's first character frame to one frame after its last (frames of 30 ms): cat 2..5,
    # sat 16..20 (the repeated t is emitted at its first frame), on 29..32
    assert [(w.word, w.start, w.end) for w in whole.words] == [
        ("cat", 0.06, 0.18),
        ("sat", 0.48, 0.63),
        ("on", 0.87, 0.99),
    ]
    # two overlapping chunks decoded apart, frames 0..21 and 12..35, cut at 0.51 s: inside "sat", which
    # both chunks hear whole; its midpoint (0.555 s) gives it to the second chunk only
    first = decoder(log_probs[:22].unsqueeze(0), torch.tensor([22]))[0]
    second = decoder(log_probs[12:].unsqueeze(0), torch.tensor([len(frames) - 12]))[0]
    joined = stitch([(first, 0.0, float("-inf"), 0.51), (second, 12 * 0.03, 0.51, float("inf"))])
    assert joined.text == whole.text
    assert [(w.word, w.start, w.end) for w in joined.words] == [(w.word, w.start, w.end) for w in whole.words]


def test_find_pause_lands_in_the_silence(spoken_words):
    samples, spans = spoken_words
    # search a window around the end of the 4th word: the 1.4 s gap after it is the quietest place
    start, stop = spans[3][0], spans[4][0] + 0.2
    centre, pause = find_pause(samples[int(start * RATE) : int(stop * RATE)], RATE)
    assert pause and spans[3][1] < start + centre < spans[4][0]
    voiced = samples[int(spans[2][0] * RATE) : int(spans[2][1] * RATE)]
    assert find_pause(voiced, RATE)[1] is False  # inside one word there is no real pause


def test_word_times_match_known_boundaries_whole_and_chunked(segments_recognizer, spoken_words, tmp_path):
    samples, spans = spoken_words
    path = tmp_path / "words.wav"
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    (whole,) = segments_recognizer.transcribe([str(path)], workers=0)
    assert whole.error is None and whole.duration == pytest.approx(len(samples) / RATE, abs=1e-3)
    assert_times(segment_times(whole), spans)
    # cut into ~3 s pieces: every cut lands in a pause, the stitched words are the same
    assert all(pause for _, pause in cuts(path, 3.0))
    (chunked,) = segments_recognizer.transcribe([str(path)], workers=0, chunk_seconds=3.0)
    assert_times(segment_times(chunked), spans)
    # pieces barely longer than a word: some cuts find no pause, the overlap keeps those words whole
    assert not all(pause for _, pause in cuts(path, 1.0))
    (tight,) = segments_recognizer.transcribe([str(path)], workers=1, chunk_seconds=1.0, overlap_seconds=1.0)
    assert_times(segment_times(tight), spans)


def test_recogs_beam_search_gives_the_same_word_times_in_a_forked_worker(
    segments_recognizer, spoken_words, tmp_path
):
    from recog.decode.ctc import CTCBeamDecoder
    from recog.decode.kernels import beam_search

    samples, spans = spoken_words
    path = tmp_path / "words.wav"
    soundfile.write(path, samples, RATE, subtype="PCM_16")
    (beam,) = segments_recognizer.transcribe([str(path)], workers=1, decoder="beam")
    assert isinstance(segments_recognizer.decoder("beam"), CTCBeamDecoder)
    assert beam_search.signatures  # compiled in this process before the worker forked
    assert beam.error is None
    assert_times(segment_times(beam), spans)
    assert all(0.0 < word.confidence <= 1.0 for word in beam.words)


def cuts(path: Path, chunk_seconds: float) -> list[tuple[float, bool]]:
    """Where the engine cuts a recording into pieces of about `chunk_seconds`, and if each is a pause."""
    options = Options(chunk_seconds=chunk_seconds)
    reader = BatchReader(SimpleNamespace(device="cpu"), plan({}, [], options), options)
    duration = soundfile.info(path).duration
    parts = math.ceil(duration / chunk_seconds)
    return [reader.cut(str(path), k * duration / parts) for k in range(1, parts)]


def test_stereo_8khz_float_flac_ogg_inputs_give_the_same_words(segments_recognizer, spoken_words, tmp_path):
    samples, spans = spoken_words
    variants = {
        "mono16k.wav": (samples, RATE, "PCM_16"),
        "stereo.wav": (np.stack([samples, 0.5 * samples], axis=1), RATE, "PCM_16"),
        "eight.wav": (read_audio_at(samples, 8000), 8000, "PCM_16"),
        "float.wav": (read_audio_at(samples, 44100), 44100, "FLOAT"),
        "int32.wav": (samples, RATE, "PCM_32"),
        "audio.flac": (samples, RATE, "PCM_24"),
        "audio.ogg": (samples, RATE, "VORBIS"),
    }
    for name, (data, rate, subtype) in variants.items():
        soundfile.write(tmp_path / name, data, rate, subtype=subtype)
    results = segments_recognizer.transcribe([str(tmp_path)], workers=2)
    assert sorted(Path(r.path).name for r in results) == sorted(variants)
    for result in results:
        assert result.error is None, result.error
        assert result.duration == pytest.approx(len(samples) / RATE, abs=0.01)
        assert_times(segment_times(result), spans, tolerance=0.08)


def read_audio_at(samples: np.ndarray, rate: int) -> np.ndarray:
    from recog.audio import resample

    return resample(samples, RATE, rate)


def test_subtitles_and_text_formats():
    words = [Word("good", 0.5, 0.9, 0.9), Word("morning", 1.0, 1.6, 0.8), Word("again", 3.25, 3.9, 0.7)]
    transcript = Transcript("good morning again", 0.0, words)
    assert to_srt(transcript) == (
        "1\n00:00:00,500 --> 00:00:01,600\ngood morning\n\n2\n00:00:03,250 --> 00:00:03,900\nagain\n"
    )
    assert to_vtt(transcript) == (
        "WEBVTT\n\n00:00:00.500 --> 00:00:01.600\ngood morning\n\n00:00:03.250 --> 00:00:03.900\nagain\n"
    )
    long = Transcript("x", 0.0, [Word("x", 3725.5, 3726.0, 1.0)])
    assert "01:02:05,500 --> 01:02:06,000" in to_srt(long)


def test_ledger_cuts_a_torn_line_and_refuses_garbage(tmp_path):
    path = tmp_path / "out.jsonl"
    good = {"path": "a.wav", "text": "hi", "duration": 1.0, "words": [], "error": None}
    failed = {"path": "b.wav", "text": None, "duration": None, "words": [], "error": "b.wav: bad"}
    path.write_text(json.dumps(good) + "\n" + json.dumps(failed) + '\n{"path": "c.wa')
    ledger = Ledger(path)
    assert ledger.repaired and set(ledger.done) == {"a.wav", "b.wav"}
    ledger.close()
    assert [record for record, _ in read_records(path)[0]] == [good, failed]
    assert path.read_text().endswith("\n")
    retry = Ledger(path, retry_failed=True)
    retry.close()
    assert set(retry.done) == {"a.wav"} and [r for r, _ in read_records(path)[0]] == [good]
    # a line that is not ours is not dropped: the file is refused and left as it is
    path.write_text(json.dumps(good) + "\nnot json\n" + json.dumps(failed) + "\n")
    before = path.read_bytes()
    with pytest.raises(JobError, match="line 2: not JSON"):
        Ledger(path)
    assert path.read_bytes() == before


def test_sources_from_folders_lists_and_manifests(tmp_path):
    for name in ("b/two.wav", "a/one.flac", "a/.hidden.wav", "a/notes.md", "c/one.wav"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "list.txt").write_text("a/one.flac\n# comment\n\nmissing.wav\n")
    (tmp_path / "set.jsonl").write_text(json.dumps({"audio": "b/two.wav", "text": "two"}) + "\n")
    sources = collect_sources([str(tmp_path / "a"), str(tmp_path / "c"), str(tmp_path / "list.txt")])
    assert [s.path for s in sources] == [
        str(tmp_path / "a/one.flac"),
        str(tmp_path / "c/one.wav"),
        "missing.wav",  # not beside the list: kept as written, it will get a 'file not found' line
    ]
    assert [s.name for s in sources] == ["one", "one.wav", "missing"]  # per-file outputs never collide
    (manifest,) = collect_sources([str(tmp_path / "set.jsonl")])
    assert manifest.path == str(tmp_path / "b/two.wav") and manifest.reference == "two"


def test_the_plan_batches_longest_first_within_the_padded_budget_and_keeps_paths_exact():
    paths = ["a.wav", "ünïcode/ß.flac", "c.wav", "d.wav", "long.wav"]
    durations = {0: 4.0, 1: 9.0, 2: 3.0, 3: 8.5, 4: 70.0}
    options = Options(batch_seconds=20.0, chunk_seconds=30.0, overlap_seconds=2.0)
    batches = plan(durations, paths, options)
    # the 70 s file is cut into 3 pieces costing 70 / 3 + 2 * 2 s each: one per batch, over budget alone
    pieces = [[(p.index, p.part, p.parts) for p in batches.batch(n)] for n in range(len(batches))]
    assert pieces == [[(4, 0, 3)], [(4, 1, 3)], [(4, 2, 3)], [(1, 0, 1), (3, 0, 1)], [(0, 0, 1), (2, 0, 1)]]
    for number in range(len(batches)):
        batch = batches.batch(number)
        cost = max(p.duration / p.parts + (4.0 if p.parts > 1 else 0.0) for p in batch)
        assert len(batch) == 1 or cost * len(batch) <= options.batch_seconds
    assert [batches.path(index) for index in range(len(paths))] == paths
    assert len(plan({}, [], options)) == 0
    # the plan a forked worker inherits is flat arrays: no Python object per file or piece
    assert {type(value) for value in vars(batches).values()} <= {np.ndarray, bytes}


def test_merge_keeps_one_line_per_file_a_success_over_an_error_in_the_given_order(tmp_path):
    def line(path, error=None):
        record = {"path": path, "text": None if error else f"text of {path}", "words": [], "error": error}
        return json.dumps(record) + "\n"

    output, part = tmp_path / "out.jsonl", tmp_path / "out.jsonl.part0of2"
    output.write_text(line("b.wav", "b.wav: bad") + line("a.wav"))
    part.write_text(line("c.wav") + line("b.wav") + line("a.wav", "a.wav: bad") + '{"path": "d.w')
    with pytest.raises(JobError, match="last line is torn"):  # a part still unfinished: nothing touched
        merge(output, [part], ["a.wav", "b.wav", "c.wav"])
    assert part.exists() and output.read_text() == line("b.wav", "b.wav: bad") + line("a.wav")
    part.write_text(line("c.wav") + line("b.wav") + line("a.wav", "a.wav: bad"))
    assert merge(output, [part], ["a.wav", "b.wav", "c.wav"]) == 3
    assert output.read_text() == line("a.wav") + line("b.wav") + line("c.wav")
    assert not part.exists()
    unchanged = output.stat().st_mtime_ns
    assert merge(output, [], ["a.wav", "b.wav", "c.wav"]) == 3 and output.stat().st_mtime_ns == unchanged


# ---------------------------------------------------------------- with a (tiny) trained model
@pytest.fixture(scope="module")
def tiny_model(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-run")
    settings = ["train.max_epochs=3", "train.eval_every=0", "train.threads=1", f"data.root={tiny_corpus}"]
    run_recog("train", TINY, "--out", str(out), *[arg for s in settings for arg in ("--set", s)], timeout=600)
    return out / "best.pt"


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sentences")
    texts = ["the cat sat on the mat", "good morning to you", "a quiet river runs deep"]
    return [synthesize(text, folder / f"s{i}.wav", words_per_minute=150) for i, text in enumerate(texts)]


def bad_files(folder: Path) -> dict[str, str]:
    """name -> the start of the error its line must carry."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "empty.wav").write_bytes(b"")
    soundfile.write(folder / "zero.wav", np.zeros(0, np.float32), RATE)
    (folder / "notes.wav").write_text("not audio at all")
    soundfile.write(folder / "nan.wav", np.array([0.1, np.nan, 0.2] * 400, np.float32), RATE, subtype="FLOAT")
    whole = (0.1 * np.sin(np.arange(RATE) / 5)).astype(np.float32)
    soundfile.write(folder / "cut.wav", whole, RATE, subtype="PCM_16")
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) // 2])
    return {
        "empty.wav": "empty file (0 bytes)",
        "zero.wav": "empty audio (0 samples)",
        "notes.wav": "not a readable audio file",
        "nan.wav": "audio contains NaN or infinite samples",
        "cut.wav": "truncated file",
    }


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_bad_files_get_an_error_line_and_the_batch_goes_on(tiny_model, sentences, tmp_path):
    folder = tmp_path / "in"
    expected_errors = bad_files(folder)
    for sentence in sentences:
        (folder / sentence.name).write_bytes(sentence.read_bytes())
    out = tmp_path / "out.jsonl"
    args = ["transcribe", "--model", str(tiny_model), str(folder), "-o", str(out), "--format", "txt,srt,vtt"]
    result = run_recog(*args, "--out-dir", str(tmp_path / "subs"), "--workers", "2")
    lines = read_lines(out)
    names = sorted(expected_errors) + [s.name for s in sentences]
    assert [Path(line["path"]).name for line in lines] == sorted(names)  # input (folder) order
    for line in lines:
        name = Path(line["path"]).name
        assert set(line) == {"path", "text", "duration", "words", "error", "model"}
        if name in expected_errors:
            assert line["text"] is None and line["words"] == []
            assert line["error"].startswith(f"{line['path']}: {expected_errors[name]}"), line["error"]
        else:
            assert line["error"] is None and isinstance(line["text"], str)
            assert line["duration"] == pytest.approx(len(read_audio(line["path"])) / RATE, abs=1e-3)
            stem = tmp_path / "subs" / Path(name).stem
            assert stem.with_suffix(".txt").read_text() == line["text"] + "\n"
            assert stem.with_suffix(".vtt").read_text().startswith("WEBVTT\n")
            assert stem.with_suffix(".srt").exists()
    assert "8 files (0 already done, 5 failed)" in result.stderr
    assert not list((tmp_path / "subs").glob(".*"))  # no temporary files left behind

    strict = run_recog(*args, "--strict", check=False)  # everything done: nothing to redo, still failures
    assert strict.returncode == 1 and read_lines(out) == lines
    only_bad = run_recog("transcribe", "--model", str(tiny_model), str(folder / "notes.wav"), check=False)
    assert only_bad.returncode == 1 and json.loads(only_bad.stdout)["error"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_an_unreadable_file_says_permission_denied(tiny_model, sentences, tmp_path):
    locked = tmp_path / "locked.wav"
    locked.write_bytes(sentences[0].read_bytes())
    locked.chmod(0)
    result = run_recog("transcribe", "--model", str(tiny_model), str(locked), str(sentences[1]))
    first, second = [json.loads(line) for line in result.stdout.splitlines()]
    assert first["error"] == f"{locked}: permission denied" and second["error"] is None


def test_permission_denied_is_reported_even_as_root(segments_recognizer, sentences, tmp_path, monkeypatch):
    import builtins

    locked, real_open = str(tmp_path / "locked.wav"), builtins.open
    Path(locked).write_bytes(sentences[0].read_bytes())

    def guarded_open(file, *args, **kwargs):
        if str(file) == locked:
            raise PermissionError(13, "Permission denied", locked)
        return real_open(file, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", guarded_open)
    first, second = segments_recognizer.transcribe([locked, str(sentences[1])], workers=0)
    assert first.error == f"{locked}: permission denied" and second.error is None


OVERFIT_TEXTS = ["open the door", "a big red fish", "good morning", "she sells shells", "seven black cats"]


@pytest.fixture(scope="module")
def long_recording(tmp_path_factory) -> tuple[Recognizer, Path, str]:
    """A small model overfitted (as in test_model.py) to five espeak-ng sentences and to one 12 s
    recording of six of them with pauses: accurate on that recording, so a difference between its
    whole and its chunked transcripts comes from cutting and stitching, not from a weak model."""
    folder = tmp_path_factory.mktemp("long")
    torch.manual_seed(0)
    vocab, features = Vocab.speech(), SpeechFeatures(FeatureConfig())
    waves = [read_audio(synthesize(text, folder / f"{i}.wav")) for i, text in enumerate(OVERFIT_TEXTS)]
    order, pause = [0, 1, 2, 3, 4, 1], np.zeros(int(0.6 * RATE), np.float32)
    recording = np.concatenate([part for i in order for part in (waves[i], pause)])
    truth = " ".join(OVERFIT_TEXTS[i] for i in order)
    texts = [*OVERFIT_TEXTS, truth]
    utterances = [features(samples) for samples in [*waves, recording]]
    cmvn = CMVN.fit("global", utterances)
    frames = [cmvn(item) for item in utterances]
    lengths = torch.tensor([item.shape[0] for item in frames])
    padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True)  # (batch, time, feat)
    labels = torch.cat([torch.tensor(vocab.encode(text)) for text in texts])
    label_lengths = torch.tensor([len(text) for text in texts])
    model = CTCModel(ModelConfig(hidden=64, layers=2, dropout=0.0, stack=3), features.dim, len(vocab))
    optimizer = torch.optim.Adam(model.parameters(), lr=5e-3)
    ctc = torch.nn.CTCLoss(blank=0, zero_infinity=True)
    decoder = GreedyDecoder(vocab)
    for step in range(1, 401):
        log_probs, out_lengths = model(padded, lengths)
        loss = ctc(log_probs.transpose(0, 1), labels, out_lengths, label_lengths)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        if step % 20 == 0:
            with torch.no_grad():
                hypotheses = [t.text for t in decoder(*model.eval()(padded, lengths))]
            model.train()
            if hypotheses == texts:
                break
    path = folder / "long.flac"
    soundfile.write(path, recording, RATE)
    recognizer = Recognizer(model.eval(), vocab, Speech(features), cmvn, DecodeConfig(lexicon=False))
    return recognizer, path, truth


def test_chunking_a_long_recording_keeps_the_text(long_recording):
    recognizer, path, truth = long_recording
    (whole,) = recognizer.transcribe([str(path)], workers=0, chunk_seconds=1000)
    assert whole.text == truth
    for chunk_seconds in (4.0, 5.0):  # 3 or 2 cuts, all in pauses
        (chunked,) = recognizer.transcribe([str(path)], workers=2, chunk_seconds=chunk_seconds)
        rate = ErrorRate()
        rate.add(whole.text, chunked.text)
        assert rate.cer <= 0.1, (chunk_seconds, chunked.text)
        assert chunked.duration == whole.duration
        starts = [word.start for word in chunked.words]
        assert starts == sorted(starts) and chunked.words[-1].end <= whole.duration + 0.1
        # words away from the cuts keep their times to the frame
        assert chunked.words[0].start == whole.words[0].start
        assert abs(chunked.words[-1].start - whole.words[-1].start) <= 0.031


def test_api_and_command_line_agree_on_stdout_in_input_order(tiny_model, sentences):
    paths = [str(sentences[2]), str(sentences[0]), str(sentences[1])]
    expected = Recognizer.load(tiny_model).transcribe(paths, workers=0)
    result = run_recog("transcribe", "--model", str(tiny_model), *paths, "--workers", "2")
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == paths
    assert [line["text"] for line in lines] == [t.text for t in expected]
    assert [line["words"] for line in lines] == [t.record()["words"] for t in expected]
    # the GPU arrangement (workers read and compute features, the main process runs model and decoder)
    in_main = Recognizer.load(tiny_model).transcribe(paths, workers=2, model_in_workers=False)
    assert [t.text for t in in_main] == [t.text for t in expected]


def test_references_give_a_wer_cer_report(tiny_model, sentences, tmp_path):
    references = ["the cat sat on the mat", "Good morning, to you!", "a quiet river runs deep"]
    manifest = tmp_path / "refs.jsonl"
    manifest.write_text(
        "".join(
            json.dumps({"audio": str(s), "text": r}) + "\n"
            for s, r in zip(sentences, references, strict=True)
        )
    )
    recognizer = Recognizer.load(tiny_model)
    summary = run(recognizer, [str(manifest)], Options(references=str(manifest), workers=0))
    expected = ErrorRate()
    for reference, transcript in zip(
        references, recognizer.transcribe(list(map(str, sentences)), workers=0), strict=True
    ):
        expected.add(" ".join(reference.lower().replace(",", " ").replace("!", " ").split()), transcript.text)
    assert summary.scores["wer"] == pytest.approx(expected.wer) and summary.scores["utterances"] == 3
    assert summary.scores["cer"] == pytest.approx(expected.cer)


def test_txt_outputs_never_overwrite_the_txt_references_they_are_scored_against(
    tiny_model, sentences, tmp_path
):
    folder = tmp_path / "in"
    folder.mkdir()
    for sentence in sentences:
        (folder / sentence.name).write_bytes(sentence.read_bytes())
        (folder / sentence.with_suffix(".txt").name).write_text(f"reference of {sentence.stem}\n")
    before = {path.name: path.read_text() for path in folder.glob("*.txt")}
    out = folder / "out.jsonl"
    args = ["transcribe", "--model", str(tiny_model), str(folder), "-o", str(out), "--ref", "txt"]
    refused = run_recog(*args, "--format", "jsonl,txt", "--workers", "0", check=False, timeout=120)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "--format txt would overwrite the reference" in refused.stderr and "--out-dir" in refused.stderr
    assert {path.name: path.read_text() for path in folder.glob("*.txt")} == before and not out.exists()
    elsewhere = tmp_path / "texts"
    summary = run(
        Recognizer.load(tiny_model),
        [str(folder)],
        Options(output=str(out), formats=("txt",), out_dir=str(elsewhere), references="txt", workers=0),
    )
    assert {path.name: path.read_text() for path in folder.glob("*.txt")} == before
    assert sorted(path.name for path in elsewhere.iterdir()) == sorted(before)
    assert summary.scores["utterances"] == 3


def test_a_file_that_is_not_a_checkpoint_is_a_clear_error(sentences):
    result = run_recog("transcribe", "--model", str(sentences[0]), str(sentences[1]), check=False, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{sentences[0]}: not a recog checkpoint" in result.stderr


SLOW_READER = """
import sys, time
import recog.transcribe as engine
read = engine.BatchReader.__getitem__
def slow(self, number):
    time.sleep(0.15)
    return read(self, number)
engine.BatchReader.__getitem__ = slow
from recog.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_kill_minus_nine_then_the_same_command_finishes_without_loss_or_duplicates(
    tiny_model, sentences, tmp_path
):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(24):
        (folder / f"clip-{index:02d}.wav").write_bytes(sentences[index % 3].read_bytes())
    out = tmp_path / "out.jsonl"
    args = ["transcribe", "--model", str(tiny_model), str(folder), "-o", str(out), "--batch-seconds", "3"]
    args += ["--workers", "1", "--format", "srt", "--out-dir", str(tmp_path / "srt")]
    # the workers are slowed down (0.15 s a batch) so that the kill lands in the middle of the run
    process = subprocess.Popen(
        [sys.executable, "-c", SLOW_READER, *args], cwd=REPO, env=subprocess_env(),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    kill_after_lines(process, out, 5)
    assert process.returncode == -signal.SIGKILL
    before = read_records(out)[0]
    assert 5 <= len(before) < 24
    with out.open("a") as stream:  # as if the kill had landed in the middle of a write
        stream.write('{"path": "' + str(folder / "clip-99.wav")[:-3])

    result = run_recog(*args)
    assert "torn last line" in result.stderr
    assert f"24 files ({len(before)} already done, 0 failed)" in result.stderr
    lines = out.read_text().splitlines()
    assert [json.loads(line)["path"] for line in lines] == [
        str(folder / f"clip-{i:02d}.wav") for i in range(24)
    ]
    assert {raw.decode().rstrip("\n") for _, raw in before} <= set(lines)  # done lines kept as they were
    texts = [json.loads(line)["text"] for line in lines]
    assert texts == [texts[i % 3] for i in range(24)]
    assert sorted(p.name for p in (tmp_path / "srt").iterdir()) == [f"clip-{i:02d}.srt" for i in range(24)]


def test_shards_write_disjoint_parts_that_merge_into_one_output(tiny_model, sentences, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(7):
        (folder / f"clip-{index}.wav").write_bytes(sentences[index % 3].read_bytes())
    recognizer = Recognizer.load(tiny_model)
    out = tmp_path / "out.jsonl"
    shares = [recognizer.transcribe([str(folder)], str(out), shard=(rank, 3), workers=0) for rank in range(3)]
    assert [len(share) for share in shares] == [3, 2, 2]
    paths = [t.path for share in shares for t in share]
    assert sorted(paths) == [str(folder / f"clip-{i}.wav") for i in range(7)]  # disjoint, complete
    parts = sorted(tmp_path.glob("out.jsonl.part*of3"))
    assert len(parts) == 3 and not out.exists()
    assert merge(out, parts, [str(folder / f"clip-{i}.wav") for i in range(7)]) == 7
    assert [r["path"] for r in read_lines(out)] == [str(folder / f"clip-{i}.wav") for i in range(7)]
    assert not list(tmp_path.glob("out.jsonl.part*"))
    # a rerun of one share finds its files in the merged output: nothing is done twice
    again = run(recognizer, [str(folder)], Options(output=str(out), shard=(1, 3), workers=0))
    assert again.resumed == 2 and again.transcribed == 0


def test_two_torchrun_processes_share_the_files_and_merge_one_output(tiny_model, sentences, tmp_path):
    folder = tmp_path / "many"
    folder.mkdir()
    for index in range(5):
        (folder / f"clip-{index}.wav").write_bytes(sentences[index % 3].read_bytes())
    (folder / "clip-5.wav").write_text("not audio")
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "recog.cli", "transcribe", "--model", str(tiny_model), str(folder), "-o", str(out),
    ]  # fmt: skip
    process = subprocess.Popen(
        command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        _, stderr = process.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        pytest.fail(f"torchrun hung:\n{process.communicate()[1][-3000:]}")
    assert process.returncode == 0, stderr[-3000:]
    assert stderr.count("3 files (0 already done") == 2  # each rank took half
    lines = read_lines(out)
    assert [line["path"] for line in lines] == [str(folder / f"clip-{i}.wav") for i in range(6)]
    assert not list(tmp_path.glob("out.jsonl.part*"))
    single = Recognizer.load(tiny_model).transcribe([str(folder)], workers=0)
    assert [line["text"] for line in lines] == [t.text if not t.error else None for t in single]
