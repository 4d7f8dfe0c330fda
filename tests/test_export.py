"""ONNX export (`recog export`) and the onnxruntime engine (`recog transcribe --engine onnx`): the same
log-probs as PyTorch for every row of a padded batch, files that do not fit refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import onnxruntime
import pytest
import torch
from conftest import run_recog, synthesize

from recog.config import ModelConfig
from recog.export import TOLERANCE, ExportError, OnnxEncoder, export_model
from recog.jobs.checks import file_sha256
from recog.model import CTCModel
from recog.recognizer import Recognizer

TINY = "configs/speech-tiny.yaml"


def padded_batch(lengths: list[int], feat: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(len(lengths), max(lengths), feat, generator=generator)  # (batch, time, feat)
    for row, length in enumerate(lengths):
        frames[row, length:] = 0.0
    return frames, torch.tensor(lengths)


@pytest.mark.parametrize(
    "settings",
    [
        dict(cell="lstm", hidden=24, layers=2, stack=3),
        dict(cell="gru", hidden=16, layers=2, stack=1, conv_channels=(4, 8), conv_norm="instance"),
    ],
    ids=["lstm-stack3", "gru-conv"],
)
def test_onnx_log_probs_match_pytorch_for_every_row_of_a_padded_batch(settings, tmp_path):
    torch.manual_seed(0)
    model = CTCModel(ModelConfig(dropout=0.0, **settings), 20, 29).eval()
    path = export_model(model, tmp_path / "encoder.onnx", {"recog.task": "test"})
    encoder = OnnxEncoder(path, model.config, threads=1)
    stack = model.config.stack
    # rows of other lengths than the export's example: one fills the batch, one is a multiple of the
    # stacking, one is not, one is shorter than an output frame (stack > 1: no output at all)
    lengths = [23 * stack + stack - 1, 9 * stack, 5 * stack + 1, max(1, stack - 1)]
    for seed, batch_lengths in enumerate([lengths, [301], [2 * stack, 2 * stack]]):
        frames, steps = padded_batch(batch_lengths, 20, seed)
        log_probs, out_lengths = encoder(frames, steps)
        assert isinstance(log_probs, torch.Tensor) and log_probs.dtype == torch.float32
        with torch.inference_mode():
            padded_torch, torch_lengths = model(frames, steps)
        assert out_lengths.tolist() == torch_lengths.tolist()
        assert log_probs.shape == padded_torch.shape
        for row, length in enumerate(batch_lengths):
            with torch.inference_mode():
                alone, _ = model(frames[row : row + 1, :length], steps[row : row + 1])  # no padding at all
            kept = int(out_lengths[row])
            assert kept == alone.shape[1]
            difference = (log_probs[row, :kept] - alone[0]).abs().max().item() if kept else 0.0
            assert difference < TOLERANCE, (row, length, difference)


def test_a_batch_too_short_for_one_output_frame_gives_empty_log_probs(tmp_path):
    model = CTCModel(ModelConfig(cell="lstm", hidden=8, layers=1, stack=3, dropout=0.0), 5, 7).eval()
    encoder = OnnxEncoder(export_model(model, tmp_path / "m.onnx", {}), model.config)
    log_probs, out_lengths = encoder(torch.randn(2, 2, 5), torch.tensor([2, 1]))
    assert log_probs.shape == (2, 0, 7) and out_lengths.tolist() == [0, 0]


def test_rnn_cells_are_refused_in_one_line_and_nothing_is_written(tmp_path):
    model = CTCModel(ModelConfig(cell="rnn", hidden=8, layers=1, stack=2, dropout=0.0), 5, 7).eval()
    with pytest.raises(ExportError, match="could not keep the batch and time axes") as error:
        export_model(model, tmp_path / "rnn.onnx", {})
    assert "\n" not in str(error.value) and str(tmp_path / "rnn.onnx") in str(error.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


# ---------------------------------------------------------------- with a (tiny) trained model
@pytest.fixture(scope="module")
def tiny_model(tiny_corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-run")
    settings = ["train.max_epochs=3", "train.eval_every=0", "train.threads=1", f"data.root={tiny_corpus}"]
    run_recog("train", TINY, "--out", str(out), *[arg for s in settings for arg in ("--set", s)], timeout=600)
    return out / "best.pt"


@pytest.fixture(scope="module")
def exported(tiny_model, tmp_path_factory) -> Path:
    """`recog export` of the tiny checkpoint, end to end through the command line."""
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = run_recog("export", "--model", str(tiny_model), "--out", str(out))
    assert str(out) in result.stderr
    return out


@pytest.fixture(scope="module")
def sentences(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("sentences")
    texts = ["the cat sat on the mat", "good morning to you", "a quiet river runs deep", "seven"]
    return [synthesize(text, folder / f"s{i}.wav", words_per_minute=150) for i, text in enumerate(texts)]


def test_the_export_carries_what_pairs_it_with_its_checkpoint(tiny_model, exported):
    metadata = {prop.key: prop.value for prop in onnx.load(str(exported)).metadata_props}
    recognizer = Recognizer.load(tiny_model)
    assert metadata["recog.model_id"] == file_sha256(tiny_model)[:16]
    assert metadata["recog.task"] == "speech"
    assert json.loads(metadata["recog.vocab"]) == recognizer.vocab.chars
    assert json.loads(metadata["recog.model_config"])["stack"] == recognizer.model.config.stack
    session = onnxruntime.InferenceSession(str(exported), providers=["CPUExecutionProvider"])
    assert [value.shape for value in session.get_inputs()] == [
        ["batch", "time", recognizer.model.input_dim],
        ["batch"],
    ]


def test_the_onnx_recognizer_gives_pytorchs_log_probs_on_real_speech(tiny_model, exported, sentences):
    from recog.audio import read_audio

    torch_recognizer, onnx_recognizer = Recognizer.load(tiny_model), Recognizer.load(tiny_model)
    onnx_recognizer.use_onnx(exported)
    assert isinstance(onnx_recognizer.model, OnnxEncoder)
    assert onnx_recognizer.model_id == torch_recognizer.model_id  # output lines name the same model
    frames = [torch_recognizer.frames(read_audio(path)) for path in sentences]  # one padded batch
    for expected, found in zip(
        torch_recognizer.forward(frames), onnx_recognizer.forward(frames), strict=True
    ):
        assert expected.shape == found.shape
        assert (expected - found).abs().max().item() < TOLERANCE


def test_transcribe_engine_onnx_gives_the_torch_engines_transcripts(tiny_model, exported, sentences):
    paths = [str(path) for path in sentences]
    lines = {}
    for engine in (["--engine", "torch"], ["--engine", "onnx", "--onnx", str(exported)]):
        result = run_recog("transcribe", "--model", str(tiny_model), *paths, "--workers", "2", *engine)
        lines[engine[1]] = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines["onnx"]] == paths
    assert all(line["error"] is None for line in lines["onnx"])
    assert [line["text"] for line in lines["onnx"]] == [line["text"] for line in lines["torch"]]
    assert [line["model"] for line in lines["onnx"]] == [line["model"] for line in lines["torch"]]


def test_without_onnx_path_the_export_goes_to_the_cache_not_beside_the_checkpoint(
    tiny_model, sentences, tmp_path, monkeypatch
):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    beside = sorted(tiny_model.parent.iterdir())
    first = run_recog("transcribe", "--model", str(tiny_model), str(sentences[0]), "--engine", "onnx")
    cached = list((tmp_path / "cache" / "recog" / "onnx").iterdir())
    assert [path.name for path in cached] == [f"speech-{file_sha256(tiny_model)[:16]}.onnx"]
    assert sorted(tiny_model.parent.iterdir()) == beside
    stamp = cached[0].stat().st_mtime_ns
    again = run_recog("transcribe", "--model", str(tiny_model), str(sentences[0]), "--engine", "onnx")
    assert cached[0].stat().st_mtime_ns == stamp  # reused, not exported again
    assert json.loads(again.stdout)["text"] == json.loads(first.stdout)["text"]


def test_bad_onnx_files_are_one_line_errors(tiny_model, exported, tmp_path):
    notes = tmp_path / "notes.onnx"
    notes.write_text("not a model at all")
    foreign = tmp_path / "foreign.onnx"  # a valid ONNX file that recog did not write
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), str(foreign))
    other = tmp_path / "other.onnx"  # a recog export of another model
    model = CTCModel(ModelConfig(cell="lstm", hidden=8, layers=1, stack=3, dropout=0.0), 5, 7).eval()
    export_model(model, other, {"recog.task": "speech", "recog.model_id": "0" * 16, "recog.vocab": "[]"})
    cases = {
        notes: "not an ONNX file",
        foreign: "not a recog export",
        other: "exported from another model",
        tmp_path / "missing.onnx": "ONNX file not found",
    }
    recognizer = Recognizer.load(tiny_model)
    for path, reason in cases.items():
        with pytest.raises(ExportError, match=reason):
            recognizer.use_onnx(path)
        result = run_recog(
            "transcribe", "--model", str(tiny_model), str(tiny_model), "--engine", "onnx", "--onnx", str(path),
            check=False,
        )  # fmt: skip
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and f"{path}: {reason}" in result.stderr, result.stderr
    # export never overwrites a file it did not write, and never runs on a GPU or in bf16
    result = run_recog("export", "--model", str(tiny_model), "--out", str(notes), check=False)
    assert result.returncode == 2 and "not overwriting it" in result.stderr
    assert notes.read_text() == "not a model at all"
    result = run_recog(
        "transcribe",
        "--model",
        str(tiny_model),
        "x.wav",
        "--engine",
        "onnx",
        "--precision",
        "bf16",
        check=False,
    )
    assert result.returncode == 2 and "runs fp32, not --precision bf16" in result.stderr
