"""An empty (or blank) transcript in a manifest is a preflight problem, reported and skipped, not a
sample trained on without a word (issue 22): speech and handwriting alike."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np

from recog.datasets.manifest import Utterance
from recog.datasets.preflight import preflight, write_report
from recog.datasets.sets import load_manifest_inputs
from recog.ink import Ink, encode_ink
from recog.modalities import Loaded, modality_for
from recog.vocab import Vocab

TEXTS = {"full": "hello", "empty": "", "blank": "   "}


def test_speech_preflight_skips_and_names_empty_transcripts(tmp_path):
    utterances = [Utterance(key, text, audio=f"/corpus/{key}.wav") for key, text in TEXTS.items()]
    audio = {key: np.zeros(16000, np.int16) for key in TEXTS}
    loaded = Loaded(audio, {key: 101 for key in TEXTS})
    kept, problems = preflight(utterances, loaded, Vocab.default(), modality_for("speech"), stack=3)
    assert [u.key for u in kept] == ["full"]
    assert {(p.key, p.source, p.reason) for p in problems} == {
        ("empty", "/corpus/empty.wav", "empty transcript"),
        ("blank", "/corpus/blank.wav", "empty transcript"),
    }
    summary = write_report(problems, len(utterances), tmp_path / "preflight-train.jsonl", "train")
    assert summary["by_reason"] == {"empty transcript": 2}


def test_handwriting_preflight_skips_and_names_empty_transcripts():
    utterances = [Utterance(key, text, shard="/corpus/shard.tar") for key, text in TEXTS.items()]
    loaded = Loaded({key: b"" for key in TEXTS}, {key: 200 for key in TEXTS}, {})
    for stack in (3, 0):  # training and evaluation
        kept, problems = preflight(utterances, loaded, Vocab.default(), modality_for("ink"), stack=stack)
        assert [u.key for u in kept] == ["full"]
        assert {(p.key, p.reason) for p in problems} == {
            ("empty", "empty transcript"),
            ("blank", "empty transcript"),
        }


def test_a_handwriting_manifest_with_an_empty_transcript_loads_the_rest(tmp_path):
    shard = tmp_path / "shard.tar"
    t = np.linspace(0, 6 * np.pi, 200)
    ink = Ink([np.stack([t * 4, 10 * np.sin(t)], axis=1)])
    with tarfile.open(shard, "w") as archive:
        for key in TEXTS:
            data = encode_ink(ink)
            info = tarfile.TarInfo(f"{key}.ink.npz")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    manifest = tmp_path / "train.jsonl"
    manifest.write_text(
        "".join(json.dumps({"key": k, "shard": shard.name, "text": v}) + "\n" for k, v in TEXTS.items())
    )
    kept, stored, problems = load_manifest_inputs(modality_for("ink"), manifest, Vocab.default(), workers=1)
    assert [u.key for u in kept] == ["full"] and set(stored) == {"full"}
    assert sorted((p.key, p.reason) for p in problems) == [
        ("blank", "empty transcript"),
        ("empty", "empty transcript"),
    ]
