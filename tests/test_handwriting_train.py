"""Handwriting training end to end on the generated tiny corpus: ink and line-image runs through the
`recog` command line, reports per style/font, self-contained checkpoints, `recog eval`, kill -9 and
resume; and the pieces underneath: preflight, augmentation, frame counts, the conv front end, and
tiny models that must overfit a few lines to CER 0."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_recog, subprocess_env

from recog.checkpoint import load_checkpoint, save_checkpoint
from recog.config import ConfigError, DecodeConfig, ModelConfig, WriterAugmentConfig, load_config
from recog.datasets.batching import collate
from recog.datasets.dataset import RecognitionDataset
from recog.datasets.manifest import read_manifest
from recog.datasets.preflight import ctc_frames_needed, preflight
from recog.decode.greedy import GreedyDecoder
from recog.features.speech import CMVN, SpeechFeatures
from recog.features.strokes import StrokeFeatureConfig, StrokeFeatures, frame_count
from recog.ink import decode_ink
from recog.metrics import ErrorRate
from recog.modalities import modality_for
from recog.model import CTCModel
from recog.recognizer import Recognizer
from recog.vocab import Vocab

INK_TINY, IMAGE_TINY = "configs/handwriting-tiny.yaml", "configs/handwriting-offline-tiny.yaml"
QUICK = ["train.max_epochs=3", "train.eval_every=0", "train.log_every=1", "train.threads=1"]


# ---------------------------------------------------------------- shared across test modules
def handwriting_corpus(factory: pytest.TempPathFactory) -> Path:
    """The tiny handwriting corpus, built once per session (later calls find it complete)."""
    from pipelines.ink_corpus import build_corpus

    root = factory.getbasetemp() / "handwriting-tiny"
    if not (root / "DONE").exists():
        build_corpus(root, preset="tiny", workers=2)
    return root


def train_args(config: str, out: Path, corpus: Path, *extra: str) -> list[str]:
    args = ["train", config, "--out", str(out)]
    for item in (f"data.root={corpus}", *QUICK, *extra):
        args += ["--set", item]
    return args


def trained_run(factory: pytest.TempPathFactory, task: str) -> dict:
    """A short `recog train` run of the tiny ink or image config, trained once per session."""
    corpus = handwriting_corpus(factory)
    out = factory.getbasetemp() / f"handwriting-run-{task}"
    log = out.with_suffix(".log")
    if not (out / "report.json").exists():
        result = run_recog(*train_args(INK_TINY if task == "ink" else IMAGE_TINY, out, corpus), timeout=600)
        log.write_text(result.stdout)
    return {"out": out, "corpus": corpus, "stdout": log.read_text()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return handwriting_corpus(tmp_path_factory)


@pytest.fixture(scope="module")
def ink_run(tmp_path_factory) -> dict:
    return trained_run(tmp_path_factory, "ink")


@pytest.fixture(scope="module")
def image_run(tmp_path_factory) -> dict:
    return trained_run(tmp_path_factory, "image")


def group_of(utterance, fields: tuple[str, ...]) -> str:
    return next(str(utterance.info[f]) for f in fields if f in utterance.info)


# ---------------------------------------------------------------- the runs
@pytest.mark.parametrize("task", ["ink", "image"])
def test_run_writes_a_report_per_set_and_group_and_a_self_contained_checkpoint(task, ink_run, image_run):
    run = ink_run if task == "ink" else image_run
    out, corpus = run["out"], run["corpus"]
    for name in ("best.pt", "last.pt", "metrics.jsonl", "report.json", "curves.png", "preflight.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    config = load_config(REPO / (INK_TINY if task == "ink" else IMAGE_TINY), [f"data.root={corpus}"])
    report = json.loads((out / "report.json").read_text())
    assert set(report["sets"]) == {Path(name).stem for name in config.data.eval_sets}
    fields = ("style",) if task == "ink" else ("style", "font")
    for manifest in config.data.eval_sets:
        utterances = read_manifest(corpus / manifest)
        for kind in ("greedy", "beam"):
            row = report["sets"][Path(manifest).stem][kind]
            assert row["utterances"] == len(utterances) and 0.0 <= row["cer"] <= 1.5
            assert set(row["groups"]) == {group_of(u, fields) for u in utterances}
    assert report["beam_tuning"]["set"] == Path(config.data.dev).stem  # LM weights chosen on dev
    grid = {(row["lm_weight"], row["word_score"]) for row in report["beam_tuning"]["grid"]}
    assert grid == {(w, s) for w in config.decode.tune_lm_weights for s in config.decode.tune_word_scores}
    if task == "image":  # the held-out outline family has its own row
        assert "femkeklaver.ttf" in report["sets"]["dev-images"]["greedy"]["groups"]
    train_steps = [
        e["step"]
        for e in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
        if e["kind"] == "train"
    ]
    assert train_steps == list(range(1, report["train_steps"] + 1))

    best = load_checkpoint(out / "best.pt")  # weights_only: plain tensors and data
    assert best["task"] == task and "train_state" not in best
    assert best["features"] == asdict(config.strokes if task == "ink" else config.image)
    assert best["cmvn"]["mean"].shape == (best["input_dim"],) and torch.all(best["cmvn"]["std"] > 0)
    assert best["vocab"] == Vocab.default().to_list()
    assert "\\data\\" in best["language_model"]["arpa"]
    lexicon = {line.split("\t")[0] for line in best["language_model"]["lexicon"].splitlines()}
    assert set((corpus / "lm-text.txt").read_text().split()) <= lexicon
    assert tuple(best["model_config"]["conv_channels"]) == config.model.conv_channels
    if task == "image":
        assert config.model.conv_channels and any(k.startswith("front.") for k in best["model_state"])
    recognizer = Recognizer.load(out / "best.pt")
    assert recognizer.task == task and recognizer.model.config == config.model


def test_eval_cli_reproduces_the_training_report_on_a_handwriting_manifest(ink_run, tmp_path):
    out, corpus = ink_run["out"], ink_run["corpus"]
    result = run_recog(
        "eval",
        "--model",
        str(out / "best.pt"),
        str(corpus / "test-seen.jsonl"),
        "-o",
        str(tmp_path / "r.json"),
    )
    expected = json.loads((out / "report.json").read_text())["sets"]["test-seen"]
    rows = {
        tuple(line.split()[:2]): line.split()
        for line in result.stdout.splitlines()[2:]
        if line.strip() and not line.startswith("[")
    }
    assert rows[("test-seen", "all")][2:7] == [
        str(expected["greedy"]["utterances"]),
        *(f"{100 * expected[kind][metric]:.1f}" for kind in ("greedy", "beam") for metric in ("wer", "cer")),
    ]
    written = json.loads((tmp_path / "r.json").read_text())
    assert written["task"] == "ink"
    assert written["sets"]["test-seen"]["greedy"]["groups"] == expected["greedy"]["groups"]


def test_kill_minus_nine_then_resume_repeats_the_same_augmented_steps(corpus, tmp_path):
    out = tmp_path / "run"
    args = train_args(INK_TINY, out, corpus, "train.checkpoint_every=4", "train.max_epochs=3")
    args += ["--set", "data.batch_frames=3000", "--set", "data.eval_sets=[dev-seen.jsonl]"]
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "recog.cli", *args], cwd=REPO, env=subprocess_env(), stdout=log, stderr=log
    )
    metrics = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        while True:
            assert process.poll() is None, (tmp_path / "first.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            if (out / "last.pt").exists() and metrics.exists():
                steps = [json.loads(line)["step"] for line in metrics.read_text().split("\n")[:-1]]
                if steps and steps[-1] >= 6:
                    break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    saved = load_checkpoint(out / "last.pt")["train_state"]["state"]["step"]
    assert saved == 4 and not (out / "report.json").exists()
    killed = {
        e["step"]: e["loss"]
        for e in map(json.loads, metrics.read_text().splitlines())
        if e["kind"] == "train"
    }

    result = run_recog(*args, "--resume", timeout=600)
    assert f"resumed from {out / 'last.pt'} at step 4" in result.stderr
    logged = [e for e in map(json.loads, metrics.read_text().splitlines()) if e["kind"] == "train"]
    assert [e["step"] for e in logged] == list(range(1, len(logged) + 1))  # each step once
    resumed = logged[4:]
    assert resumed[0]["step"] == 5
    for entry in resumed[:2]:  # same weights, optimizer, batch order and writer perturbations
        assert entry["loss"] == pytest.approx(killed[entry["step"]], rel=1e-3)
    assert json.loads((out / "report.json").read_text())["train_steps"] == resumed[-1]["step"]


# ---------------------------------------------------------------- the pieces
def test_frame_count_equals_the_number_of_feature_frames(corpus):
    utterances = read_manifest(corpus / "train.jsonl")[:12]
    with tarfile.open(utterances[0].shard) as shard:
        inks = [decode_ink(shard.extractfile(f"{u.key}.ink.npz").read()) for u in utterances]
    for config in (StrokeFeatureConfig(), StrokeFeatureConfig(step=0.31, deskew=False, deslant=False)):
        features = StrokeFeatures(config)
        assert [frame_count(ink, config) for ink in inks] == [features(ink).shape[0] for ink in inks]


def test_preflight_names_each_unusable_sample_and_keeps_the_rest(corpus, tmp_path):
    good = read_manifest(corpus / "dev-seen.jsonl")
    torn = tmp_path / "torn.tar"
    data = Path(good[0].shard).read_bytes()
    torn.write_bytes(data[: len(data) // 3])
    lines = [json.dumps({"key": u.key, "shard": u.shard, "text": u.text}) for u in good[:3]]
    lines.append(json.dumps({"key": good[3].key, "shard": good[3].shard, "text": "cafe #1"}))
    lines.append(json.dumps({"key": "no-such-key", "shard": good[0].shard, "text": "hello"}))
    lines.append(json.dumps({"key": good[4].key, "shard": good[4].shard, "text": "ab" * 1000}))
    lines.append(json.dumps({"key": good[5].key, "shard": str(torn), "text": good[5].text}))
    (tmp_path / "m.jsonl").write_text("\n".join(lines) + "\n")
    utterances = read_manifest(tmp_path / "m.jsonl")
    ink = modality_for("ink", StrokeFeatureConfig())
    loaded = ink.load(utterances, workers=2)
    kept, problems = preflight(utterances, loaded, Vocab.default(), ink, stack=3)
    assert [u.key for u in kept] == [u.key for u in good[:3]]
    reasons = {p.key: p.reason for p in problems}
    assert reasons[good[3].key] == "characters outside the vocabulary: '#1'"
    assert (
        reasons["no-such-key"].startswith("unreadable sample:")
        and "not found in shard" in reasons["no-such-key"]
    )
    assert (
        reasons[good[4].key].startswith("too short for its transcript:")
        and "CTC needs 2000" in reasons[good[4].key]
    )
    assert reasons[good[5].key].startswith("unreadable sample:") and str(torn) in reasons[good[5].key]
    # evaluation (stack 0) does not judge lengths
    kept, _ = preflight(utterances, loaded, Vocab.default(), ink, stack=0)
    assert good[4].key in {u.key for u in kept}


def test_writer_augmentation_is_seeded_by_epoch_and_index_and_never_breaks_ctc(corpus):
    utterances = read_manifest(corpus / "train.jsonl")[:6]
    ink = modality_for("ink", StrokeFeatureConfig(step=0.25))
    loaded = ink.load(utterances, stats_samples=6)
    cmvn = ink.normaliser(loaded)
    vocab = Vocab.default()
    plain = RecognitionDataset(ink, utterances, loaded.stored, loaded.frames, vocab, cmvn, stack=3)
    augmented = RecognitionDataset(
        ink,
        utterances,
        loaded.stored,
        loaded.frames,
        vocab,
        cmvn,
        WriterAugmentConfig(prob=1.0, strength=2.0),
        seed=1,
        stack=3,
    )
    assert plain[2][0].shape[0] == loaded.frames[utterances[2].key]
    first, again, other = augmented[(2, 1)][0], augmented[(2, 1)][0], augmented[(2, 2)][0]
    assert torch.equal(first, again)  # a resumed run sees the same perturbation
    assert first.shape != other.shape or not torch.equal(first, other)
    assert first.shape != plain[2][0].shape or not torch.equal(first, plain[2][0])
    for epoch in range(4):
        for index in range(len(utterances)):
            needed = ctc_frames_needed(vocab.encode(utterances[index].text))
            assert augmented[(index, epoch)][0].shape[0] // 3 >= needed


def test_conv_front_end_gives_a_padded_batch_the_outputs_of_each_line_alone():
    torch.manual_seed(0)
    model = CTCModel(
        ModelConfig(hidden=16, layers=2, dropout=0.0, stack=2, conv_channels=(4, 8)), 24, 10
    ).eval()
    long, short = torch.randn(40, 24), torch.randn(23, 24)
    batch = collate([(long, torch.tensor([1])), (short, torch.tensor([1]))])
    with torch.no_grad():
        together, lengths = model(batch["frames"], batch["lengths"])
        alone, alone_lengths = model(short.unsqueeze(0), torch.tensor([23]))
    assert lengths.tolist() == [20, 11] and alone_lengths.tolist() == [11]
    torch.testing.assert_close(together[1, :11], alone[0], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="conv_channels"):
        CTCModel(ModelConfig(conv_channels=(4, 4, 4)), 6, 10)


def test_speech_checkpoints_without_task_or_conv_keys_still_load(tmp_path):
    config = ModelConfig(hidden=16, layers=1, stack=3)
    features = SpeechFeatures(load_config().features)
    model = CTCModel(config, features.dim, len(Vocab.speech()))
    model_config = {k: v for k, v in asdict(config).items() if k != "conv_channels"}  # as saved before
    payload = {
        "model_state": model.state_dict(),
        "model_config": model_config,
        "input_dim": features.dim,
        "vocab": Vocab.speech().to_list(),
        "features": asdict(features.config),
        "cmvn": CMVN("utterance").state(),
        "decode": asdict(DecodeConfig()),
        "language_model": None,
    }
    save_checkpoint(payload, tmp_path / "old.pt")
    recognizer = Recognizer.load(tmp_path / "old.pt")
    assert recognizer.task == "speech" and recognizer.model.front is None
    assert recognizer.frame_seconds == pytest.approx(0.03)


def test_config_sections_per_task_and_clear_errors():
    ink = load_config(REPO / "configs/handwriting.yaml")
    image = load_config(REPO / "configs/handwriting-offline.yaml")
    assert (ink.task, image.task) == ("ink", "image")
    assert ink.data.eval_sets == ("dev.jsonl", "test.jsonl", "test-seen.jsonl")
    assert image.data.train == "train-images.jsonl" and image.model.conv_channels
    assert ink.train.max_minutes > 0 and image.train.max_minutes > 0
    with pytest.raises(ConfigError, match="^task: expected one of speech, ink, image, got 'video'$"):
        load_config(None, ["task=video"])
    with pytest.raises(ConfigError, match="unknown config key 'strokes.stepp'"):
        load_config(REPO / INK_TINY, ["strokes.stepp=0.2"])
    with pytest.raises(ConfigError, match="model.conv_channels"):
        load_config(None, ["model.conv_channels=8"])


@pytest.mark.parametrize(
    ("task", "manifest", "model", "steps"),
    [
        ("ink", "train.jsonl", ModelConfig(hidden=64, layers=2, dropout=0.0, stack=3), 400),
        (
            "image",
            "train-images.jsonl",
            ModelConfig(hidden=64, layers=2, dropout=0.0, stack=2, conv_channels=(8, 16)),
            800,
        ),
    ],
)
def test_a_tiny_model_overfits_a_few_lines_to_zero_cer(corpus, task, manifest, model, steps):
    """The whole path (reader, features, normalisation, model, CTC, greedy decoding) can learn."""
    torch.manual_seed(0)
    utterances = sorted(read_manifest(corpus / manifest), key=lambda u: len(u.text))[:3]
    modality = modality_for(task, {"step": 0.25} if task == "ink" else {"height": 24})
    features = modality.features
    loaded = modality.load(utterances, stats_samples=3)
    vocab = Vocab.default()
    dataset = RecognitionDataset(
        modality, utterances, loaded.stored, loaded.frames, vocab, modality.normaliser(loaded)
    )
    batch = collate([dataset[i] for i in range(len(dataset))])
    network = CTCModel(model, features.dim, len(vocab))
    optimizer = torch.optim.Adam(network.parameters(), lr=0.01)
    ctc = torch.nn.CTCLoss(zero_infinity=True)
    decoder, cer = GreedyDecoder(vocab), 1.0
    for step in range(1, steps + 1):
        log_probs, lengths = network(batch["frames"], batch["lengths"])
        loss = ctc(log_probs.transpose(0, 1), batch["labels"], lengths, batch["label_lengths"])
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.parameters(), 5.0)
        optimizer.step()
        if step % 25 == 0:
            network.eval()
            with torch.no_grad():
                log_probs, lengths = network(batch["frames"], batch["lengths"])
            network.train()
            rate = ErrorRate()
            for utterance, hypothesis in zip(utterances, decoder(log_probs, lengths), strict=True):
                rate.add(utterance.text, hypothesis.text)
            cer = rate.cer
            if cer == 0.0:
                break
    assert cer == 0.0, f"{task}: CER {cer:.3f} after {steps} steps"


def test_train_handwriting_pipeline_refuses_a_speech_config(capsys):
    from pipelines.train_handwriting import main

    assert main(["--config", str(REPO / "configs/speech-tiny.yaml"), "--out", "/nonexistent"]) == 2
    assert "this recipe trains ink or image models" in capsys.readouterr().err


def test_image_run_can_be_read_back_with_the_same_numbers(image_run):
    """Recognizer.load + the stored dev images give exactly the report's greedy dev CER."""
    from recog.datasets.sets import load_manifest_inputs

    out, corpus = image_run["out"], image_run["corpus"]
    recognizer = Recognizer.load(out / "best.pt")
    kept, stored, problems = load_manifest_inputs(
        recognizer.modality, corpus / "test-images.jsonl", recognizer.vocab
    )
    assert not problems
    result = recognizer.evaluate(kept, stored, kinds=("greedy",))
    expected = json.loads((out / "report.json").read_text())["sets"]["test-images"]["greedy"]
    assert result["greedy"]["cer"] == pytest.approx(expected["cer"])
    assert result["greedy"]["groups"] == expected["groups"]
