"""`recog read`: ink files (InkML, IAM XML, JSON) and line images (PNG, JPEG, BMP) through the command
line with the tiny trained models; broken files, folders, the same text as the library, character
positions (forced alignment on hand-made log-probs, checked against brute force), kill -9 and resume."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import tarfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO, kill_after_lines, run_recog, subprocess_env
from PIL import Image
from test_handwriting_train import trained_run

from recog.checkpoint import save_checkpoint
from recog.config import DecodeConfig, ModelConfig, load_config
from recog.datasets.manifest import read_manifest
from recog.decode.ctc import CTCBeamDecoder
from recog.features.image import stretch_contrast
from recog.features.speech import CMVN, SpeechFeatures
from recog.image import read_image
from recog.ink import Ink, decode_ink, read_ink
from recog.modalities import modality_for
from recog.model import CTCModel
from recog.read import align, char_positions, load_input, words_of
from recog.recognizer import Recognizer
from recog.vocab import Vocab


@pytest.fixture(scope="module")
def ink_model(tmp_path_factory) -> dict:
    return trained_run(tmp_path_factory, "ink")


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> dict:
    return trained_run(tmp_path_factory, "image")


def corpus_members(corpus: Path, manifest: str, member: str, count: int) -> list[bytes]:
    utterances = read_manifest(corpus / manifest)[:count]
    with tarfile.open(utterances[0].shard) as shard:
        return [shard.extractfile(f"{u.key}.{member}").read() for u in utterances]


def write_json(ink: Ink, path: Path) -> Path:
    strokes = [np.column_stack([s, t]).tolist() for s, t in zip(ink.strokes, ink.times, strict=True)]
    path.write_text(json.dumps({"strokes": strokes}))
    return path


def write_inkml(ink: Ink, path: Path) -> Path:
    traces = "".join(
        "<trace>" + ", ".join(f"{x:g} {y:g} {t:.3f}" for (x, y), t in zip(s, ts, strict=True)) + "</trace>\n"
        for s, ts in zip(ink.strokes, ink.times, strict=True)
    )
    path.write_text(
        '<ink xmlns="http://www.w3.org/2003/InkML"><traceFormat><channel name="X"/><channel name="Y"/>'
        f'<channel name="T"/></traceFormat>\n{traces}</ink>\n'
    )
    return path


def write_iam(ink: Ink, path: Path) -> Path:
    strokes = "".join(
        "<Stroke>"
        + "".join(f'<Point x="{x:g}" y="{y:g}" time="{t:.3f}"/>' for (x, y), t in zip(s, ts, strict=True))
        + "</Stroke>"
        for s, ts in zip(ink.strokes, ink.times, strict=True)
    )
    path.write_text(f"<WhiteboardCaptureSession><StrokeSet>{strokes}</StrokeSet></WhiteboardCaptureSession>")
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def check_positions(record: dict, total: int, extent: tuple[int, int]) -> None:
    """Characters tile the input in order: contiguous, from the first ink to the last."""
    assert "".join(c["char"] for c in record["chars"]) == record["text"]
    chars = [c for c in record["chars"] if c["start"] is not None]  # characters the model cannot write
    if not chars:
        return
    assert chars[0]["start"] == extent[0] and chars[-1]["end"] == extent[1] <= total
    for left, right in zip(chars, chars[1:], strict=False):
        assert left["start"] <= left["end"] == right["start"]
    assert all(0.0 <= c["confidence"] <= 1.0 for c in chars)
    assert [w["word"] for w in record["words"]] == record["text"].split()


# ---------------------------------------------------------------- ink
def test_read_ink_files_in_three_formats_and_survive_broken_ones(ink_model, tmp_path):
    inks = [decode_ink(data) for data in corpus_members(ink_model["corpus"], "test-seen.jsonl", "ink.npz", 3)]
    good = [
        write_inkml(inks[0], tmp_path / "a.inkml"),
        write_iam(inks[1], tmp_path / "b.xml"),
        write_json(inks[2], tmp_path / "c.json"),
    ]
    bomb = tmp_path / "bomb.inkml"
    bomb.write_text(
        '<?xml version="1.0"?><!DOCTYPE ink [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><ink><trace>&b;</trace></ink>'
    )
    broken = tmp_path / "broken.json"
    broken.write_text('{"strokes": [[[1, 2], [3')
    image = tmp_path / "line.png"
    Image.new("L", (40, 10), 255).save(image)
    paths = [good[0], bomb, good[1], broken, image, good[2], tmp_path / "missing.inkml"]
    result = run_recog("read", "--model", str(ink_model["out"] / "best.pt"), *map(str, paths), "--greedy")
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in paths]  # input order, the batch went on
    recognizer = Recognizer.load(ink_model["out"] / "best.pt")
    for record in (records[0], records[2], records[5]):
        assert record["error"] is None and set(record) == {
            "path",
            "text",
            "confidence",
            "points",
            "chars",
            "words",
            "error",
            "model",
        }
        ink = read_ink(record["path"])
        assert record["points"] == ink.num_points
        assert (
            record["text"] == recognizer.decode(recognizer.log_probs([ink]))[0].text
        )  # as the library reads it
        check_positions(record, ink.num_points, (0, ink.num_points))
    assert "entities" in records[1]["error"] and records[1]["error"].startswith(str(bomb))
    assert "malformed JSON" in records[3]["error"]
    assert records[4]["error"] == f"{image}: an image (.png), and this model reads ink"
    assert records[6]["error"] == f"{tmp_path / 'missing.inkml'}: file not found"
    assert all(
        r["text"] is None and r["chars"] == [] for r in (records[1], records[3], records[4], records[6])
    )
    assert "7 files (0 already done, 4 failed)" in result.stderr


def test_read_resumes_after_kill_minus_nine_without_duplicate_torn_or_missing_lines(ink_model, tmp_path):
    inks = [decode_ink(data) for data in corpus_members(ink_model["corpus"], "dev-seen.jsonl", "ink.npz", 6)]
    folder = tmp_path / "inks"
    folder.mkdir()
    for number in range(150):
        write_json(inks[number % len(inks)], folder / f"line-{number:03d}.json")
    out = tmp_path / "out.jsonl"
    args = ["read", "--model", str(ink_model["out"] / "best.pt"), str(folder), "-o", str(out)]
    args += ["--batch-size", "1", "--workers", "0"]
    process = subprocess.Popen(
        [sys.executable, "-m", "recog.cli", *args], cwd=REPO, env=subprocess_env(), stderr=subprocess.PIPE
    )
    kill_after_lines(process, out, 5)
    first = out.read_bytes()
    done = first.count(b"\n")
    assert 5 <= done < 150
    with out.open("ab") as stream:  # as if the kill had torn the line being written
        stream.write(b'{"path": "' + str(folder).encode() + b'/line-149.json", "te')

    result = run_recog(*args, "--progress")
    assert "cut off a torn last line" in result.stderr
    assert f"150 files ({done} already done, 0 failed)" in result.stderr
    records = lines_of(out)
    expected = [str(folder / f"line-{number:03d}.json") for number in range(150)]
    assert [r["path"] for r in records] == expected  # each once, in input order
    assert all(r["error"] is None for r in records)
    texts = {json.loads(line)["path"]: json.loads(line)["text"] for line in first.splitlines()}
    assert all(records[expected.index(path)]["text"] == text for path, text in texts.items())
    # same ink, same text: the resumed part agrees with the part read before the kill
    assert len({r["text"] for r in records[0::6]}) == 1

    again = run_recog(*args)
    assert "150 files (150 already done, 0 failed)" in again.stderr and lines_of(out) == records


# ---------------------------------------------------------------- images
def test_read_a_folder_of_images_with_a_broken_one(image_model, tmp_path):
    pngs = corpus_members(image_model["corpus"], "test-images.jsonl", "png", 4)
    folder = tmp_path / "scans"
    (folder / "more").mkdir(parents=True)
    (folder / "a.png").write_bytes(pngs[0])
    Image.open(folder / "a.png").convert("RGB").save(folder / "b.jpg", quality=95)
    Image.open(io.BytesIO(pngs[1])).save(folder / "more" / "c.bmp")
    (folder / "d.png").write_bytes(pngs[2][: len(pngs[2]) // 2])  # truncated
    (folder / "e.png").write_bytes(b"not a png at all")
    (folder / "notes.txt").write_text("not an image, not picked up")
    out = tmp_path / "read.jsonl"
    result = run_recog(
        "read",
        "--model",
        str(image_model["out"] / "best.pt"),
        str(folder),
        "-o",
        str(out),
        "--beam",
        "--workers",
        "2",
        "--batch-size",
        "2",
    )
    assert result.stdout == ""
    records = {Path(r["path"]).name: r for r in lines_of(out)}
    assert list(records) == ["a.png", "b.jpg", "d.png", "e.png", "c.bmp"]  # sorted walk, folders after files
    assert records["d.png"]["error"] and records["e.png"]["error"].endswith("not an image Pillow can read")
    recognizer = Recognizer.load(image_model["out"] / "best.pt")
    assert isinstance(recognizer.decoder("beam"), CTCBeamDecoder)
    for name in ("a.png", "b.jpg", "c.bmp"):
        record = records[name]
        assert record["error"] is None
        ink_map = read_image(record["path"])
        assert (record["width"], record["height"]) == (ink_map.shape[1], ink_map.shape[0])
        columns = np.flatnonzero((stretch_contrast(ink_map) > 0.25).any(axis=0))  # where normalisation crops
        check_positions(record, ink_map.shape[1], (columns[0], columns[-1] + 1))  # in the original's pixels
        # recog's beam search, as the library runs it; a word outside the lexicon is spelled and placed
        frames, _, _ = load_input(recognizer, record["path"])
        assert record["text"] == recognizer.decode(recognizer.forward([frames]), "beam")[0].text
        assert all(c["start"] is not None for c in record["chars"] if c["char"] != " ")
    assert "5 files (0 already done, 2 failed)" in result.stderr


def test_read_refuses_a_speech_model_and_an_empty_folder(image_model, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run_recog(
        "read", "--model", str(image_model["out"] / "best.pt"), str(tmp_path / "empty"), check=False
    )
    assert (
        result.returncode == 2 and "ReadError: no .png .jpg .jpeg .tif .tiff .bmp files in" in result.stderr
    )
    features = SpeechFeatures(load_config().features)
    model = CTCModel(ModelConfig(hidden=8, layers=1), features.dim, len(Vocab.speech()))
    payload = {
        "task": "speech",
        "model_state": model.state_dict(),
        "model_config": asdict(model.config),
        "input_dim": features.dim,
        "vocab": Vocab.speech().to_list(),
        "features": asdict(features.config),
        "cmvn": CMVN("utterance").state(),
        "decode": asdict(DecodeConfig()),
    }
    save_checkpoint(payload, tmp_path / "speech.pt")
    result = run_recog("read", "--model", str(tmp_path / "speech.pt"), str(tmp_path / "empty"), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert (
        f"ReadError: {tmp_path / 'speech.pt'}: this is a speech model: `recog read` needs an ink or image "
        "model (use `recog transcribe` for speech models)"
    ) in result.stderr


# ---------------------------------------------------------------- alignment, by hand and by brute force
def hand_made(path: list[int], vocab_size: int, peak: float = 0.9) -> torch.Tensor:
    """(time, vocab) log-probs whose best path is `path`."""
    probs = np.full((len(path), vocab_size), (1 - peak) / (vocab_size - 1))
    probs[np.arange(len(path)), path] = peak
    return torch.from_numpy(np.log(probs))


def test_character_positions_on_log_probs_whose_best_path_is_known():
    vocab = Vocab("abc ")
    a, b, c, space = (vocab.encode(ch)[0] for ch in "abc ")
    path = [0, a, a, 0, 0, b, 0, 0, c, c, 0, 0]  # a: frames 1-2, b: 5, c: 8-9
    log_probs = hand_made(path, len(vocab))
    assert align(log_probs.numpy(), vocab.encode("abc")) == [(1, 2), (5, 5), (8, 9)]
    places = np.arange(24) * 10  # ink: 2 frames per output frame (stack 2), each from a point
    chars = char_positions(log_probs, "abc", vocab, 2, places, (0, 240), modality_for("ink"))
    # cuts in the middle of the blank gaps: (2 + 1 + 5) / 2 = 4 and (5 + 1 + 8) / 2 = 7 output frames
    assert [(ch["char"], ch["start"], ch["end"]) for ch in chars] == [
        ("a", 0, 80),
        ("b", 80, 140),
        ("c", 140, 240),
    ]
    assert chars[0]["confidence"] == pytest.approx(0.9)
    # image columns: frame i is centred on pixel 3.25 + 2 i of the original image, ink in columns 2-48;
    # the cut after output frame 4 (input frame 8) is at x = 18.25, nearest to the left edge of pixel 19
    columns = 3.25 + 2.0 * np.arange(24)
    chars = char_positions(log_probs, "abc", vocab, 2, columns, (2, 49), modality_for("image"))
    assert [(ch["start"], ch["end"]) for ch in chars] == [(2, 19), (19, 31), (31, 49)]
    # a doubled letter needs the blank between its two halves
    path = [a, 0, a, space, b]
    assert align(hand_made(path, len(vocab)).numpy(), vocab.encode("aa b")) == [
        (0, 0),
        (2, 2),
        (3, 3),
        (4, 4),
    ]
    assert words_of(
        char_positions(
            hand_made(path, len(vocab)), "aa b", vocab, 1, np.arange(5), (0, 5), modality_for("ink")
        )
    ) == [
        {"word": "aa", "start": 0, "end": 3, "confidence": pytest.approx(0.9)},
        {"word": "b", "start": 4, "end": 5, "confidence": pytest.approx(0.9)},
    ]
    assert align(hand_made([a, b], len(vocab)).numpy(), vocab.encode("aab")) is None  # too few frames


def test_forced_alignment_agrees_with_brute_force():
    rng = np.random.default_rng(3)
    for labels in ([1, 2], [1, 1], [2, 1, 2]):
        log_probs = np.log(rng.dirichlet(np.ones(3), size=6))
        best, best_path = -np.inf, None
        for path in itertools.product(range(3), repeat=6):
            collapsed = [k for k, _ in itertools.groupby(path) if k != 0]
            score = log_probs[np.arange(6), path].sum()
            if collapsed == labels and score > best:
                best, best_path = score, path
        spans = []
        for t, (token, previous) in enumerate(zip(best_path, (0, *best_path[:-1]), strict=True)):
            if token and token != previous:
                spans.append([t, t])
            elif token:
                spans[-1][1] = t
        assert align(log_probs, labels) == [tuple(span) for span in spans], labels


def test_image_frames_map_back_to_the_columns_they_came_from():
    from recog.features.image import ImageFeatureConfig, ImageFeatures, column_sources

    ink = np.zeros((30, 200), dtype=np.float32)
    ink[5:26, 40:50] = 1.0  # two bars of ink, in columns 40-49 and 150-159
    ink[5:26, 150:160] = 1.0
    for config in (ImageFeatureConfig(height=24), ImageFeatureConfig(height=40, pad=0.5)):
        frames = ImageFeatures(config)(ink)  # (width, height)
        places, left, right = column_sources(ink, config)
        assert (left, right) == (40, 160) and len(places) == len(frames)
        inked = places[frames.mean(axis=1) > 0.5]
        assert np.all(((inked > 39) & (inked < 50)) | ((inked > 149) & (inked < 160)))
        assert inked.min() < 41 and inked.max() > 158  # both ends of the ink are found


def test_ink_frames_map_back_to_the_points_as_given_duplicates_included():
    from recog.features.strokes import StrokeFeatures, input_point_indices

    rng = np.random.default_rng(0)
    strokes = []
    for start in (0.0, 30.0, 55.0):
        points = np.cumsum(rng.normal(0, 1, (40, 2)), axis=0) + [start, 0.0]
        strokes.append(
            np.repeat(points, rng.integers(1, 4, len(points)), axis=0)
        )  # a resting pen repeats points
    ink = Ink(strokes)
    frames, sources = StrokeFeatures().frames_and_points(ink)
    places = input_point_indices(ink, sources)
    assert len(places) == len(frames) and places[0] == 0
    assert np.all(np.diff(places) >= 0) and places[-1] < ink.num_points
    given = ink.points()
    first_of_run = np.concatenate([[True], np.any(np.diff(given, axis=0) != 0, axis=1)])
    assert first_of_run[places].all()  # always the first of a run of repeated points
    stroke_of = ink.stroke_ids()
    pen_up = frames[:, 3] > 0.5  # a new stroke starts: its first point as given
    starts = np.concatenate([[0], np.cumsum([len(s) for s in strokes])[:-1]])
    assert places[pen_up].tolist() == starts.tolist() and len(set(stroke_of[places])) == 3


def test_a_word_recogs_beam_search_spells_outside_the_lexicon_is_placed_like_the_rest():
    vocab = Vocab.speech()
    a, b, k, n, u, space = (vocab.encode(ch)[0] for ch in "abknu ")
    path = [a, 0, space, u, n, k, 0, space, b]  # "a unk b": 'unk' is not in the lexicon
    log_probs = hand_made(path, len(vocab))
    decoder = CTCBeamDecoder(vocab, lexicon=["a", "b"], beam=8, unk_score=-2.0, frame_seconds=1.0)
    transcript = decoder(log_probs)[0]
    assert transcript.text == "a unk b"
    chars = char_positions(
        log_probs, transcript.text, vocab, 1, np.arange(len(path)), (0, len(path)), modality_for("ink")
    )
    assert all(c["start"] is not None and c["confidence"] == pytest.approx(0.9) for c in chars)
    words = words_of(chars)
    assert [(w["word"], w["start"], w["end"]) for w in words] == [("a", 0, 2), ("unk", 3, 7), ("b", 8, 9)]
    # the same words and spans as the decoder's own word times (frames = points here)
    assert [(w.word, w.start) for w in transcript.words] == [(w["word"], w["start"]) for w in words]
