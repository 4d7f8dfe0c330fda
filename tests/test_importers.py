"""`recog data import`: small trees in each real layout (generated audio, ink and images), imported and
read back with training's own loaders; bad inputs are reported and skipped; the output-folder rules."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from conftest import REPO, run_recog, subprocess_env
from PIL import Image, ImageDraw

from recog.checkpoint import load_checkpoint
from recog.config import load_config
from recog.datasets.importers import ImporterError, Options, cli, convert, import_corpus, output
from recog.datasets.manifest import read_manifest
from recog.datasets.preflight import preflight
from recog.datasets.shards import from_int16, load_audio
from recog.modalities import modality_for
from recog.vocab import DEFAULT_CHARS, Vocab

RATE = 16000


# ---------------------------------------------------------------- fixture trees
def tone(seconds: float, rate: int = RATE, frequency: float = 220.0, channels: int = 1) -> np.ndarray:
    time = np.arange(int(seconds * rate)) / rate
    wave = 0.3 * np.sin(2 * np.pi * frequency * time) + 0.02 * np.random.default_rng(0).standard_normal(
        len(time)
    )
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def write_librispeech(root: Path, lower: bool = False) -> Path:
    """LibriSpeech/{train-clean-100,dev-clean,test-clean}/SPEAKER/CHAPTER/ (16 kHz FLAC), SPEAKERS.TXT,
    and in train-clean-100/19/198: a FLAC without a transcript line, a line without a FLAC, a line
    without text and an unreadable FLAC."""
    speakers = {
        "train-clean-100": [("19", "198"), ("26", "495")],
        "dev-clean": [("84", "121")],
        "test-clean": [("61", "70")],
    }
    words = ["THE KING'S DOG", "RAN HOME", "A LITTLE LATER", "SHE SAID NOTHING"]
    table = [";ID  |SEX| SUBSET           |MINUTES| NAME"]
    for subset, chapters in speakers.items():
        for speaker, chapter in chapters:
            folder = root / "LibriSpeech" / subset / speaker / chapter
            folder.mkdir(parents=True)
            lines = []
            for number, text in enumerate(words[:3] if subset.startswith("train") else words[:2]):
                utterance = f"{speaker}-{chapter}-{number:04d}"
                soundfile.write(
                    folder / f"{utterance}.flac",
                    tone(1.2, frequency=200 + 40 * number),
                    RATE,
                    subtype="PCM_16",
                )
                lines.append(f"{utterance} {text.lower() if lower else text}  ")
            if (speaker, chapter) == ("19", "198") and not lower:
                soundfile.write(folder / "19-198-0009.flac", tone(1.0), RATE)  # no transcript line
                (folder / "19-198-0006.flac").write_bytes(b"fLaC not really")  # unreadable
                lines += ["19-198-0006 BROKEN AUDIO", "19-198-0008 NO SUCH FILE", "19-198-0007"]
            (folder / f"{speaker}-{chapter}.trans.txt").write_text("\n".join(lines) + "\n")
            table.append(
                f"{speaker:<4} | {'F' if speaker in ('19', '84') else 'M'} | {subset:<16} | 25.19 | Reader {speaker}"
            )
    (root / "LibriSpeech" / "SPEAKERS.TXT").write_text("\n".join(table) + "\n")
    return root / "LibriSpeech"


def write_commonvoice(root: Path, mp3: bool = True) -> Path:
    """en/{train,dev,test}.tsv and clips/ (32 kHz MP3 when `mp3`, else placeholder bytes), plus one WAV clip."""
    clips = root / "en" / "clips"
    clips.mkdir(parents=True)
    header = "client_id\tpath\tsentence_id\tsentence\tsentence_domain\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"
    rows = {"train": [], "dev": [], "test": []}
    for number, (split, speaker, text) in enumerate(
        [
            ("train", "aa11", 'He said "hello" there.'),
            ("train", "bb22", "Caf\u0065\u0301 au lait"),
            ("train", "aa11", "Plain words"),
            ("dev", "cc33", "Another one"),
            ("test", "dd44", "The last clip"),
        ]
    ):
        name = f"common_voice_en_{100 + number}.mp3"
        if mp3:
            soundfile.write(clips / name, tone(1.5, rate=32000), 32000, format="MP3")
        else:
            (clips / name).write_bytes(b"ID3 placeholder")
        rows[split].append(
            f"{speaker}\t{name}\ts{number}\t{text}\t\t2\t0\tthirties\tfemale\tUnited States English\t\ten\t"
        )
    soundfile.write(clips / "common_voice_en_200.wav", tone(1.0, rate=48000), 48000)
    rows["train"].append("ee55\tcommon_voice_en_200.wav\ts9\tA wave file\t\t2\t0\t\t\t\t\ten\t")
    rows["train"] += ["ff66\tcommon_voice_en_404.mp3\ts10\tMissing clip\t\t2\t0\t\t\t\t\ten\t", "ff66\tshort"]
    rows["dev"].append("gg77\tcommon_voice_en_102.mp3\ts11\t   \t\t2\t0\t\t\t\t\ten\t")
    for split, lines in rows.items():
        (root / "en" / f"{split}.tsv").write_text("\n".join([header, *lines]) + "\n")
    return root / "en"


def write_table(root: Path) -> Path:
    """data/metadata.csv with wav/ files (22.05 kHz stereo), six speakers, and three bad rows."""
    (root / "data" / "wav").mkdir(parents=True)
    lines = ["audio,text,speaker,emotion"]
    for number in range(12):
        soundfile.write(root / "data" / "wav" / f"utt{number}.wav", tone(1.0, rate=22050, channels=2), 22050)
        lines.append(f'wav/utt{number}.wav,"sentence number {number}, read aloud",spk{number % 6},calm')
    lines += ["wav/missing.wav,no such file,spk0,calm", "wav/utt0.wav,  ,spk0,calm", "wav/utt1.wav"]
    (root / "data" / "metadata.csv").write_text("\n".join(lines) + "\n")
    return root / "data" / "metadata.csv"


def stroke_xml(seed: int, letters: int = 12) -> str:
    rng = np.random.default_rng(seed)
    strokes, time = [], 1000.0 + seed
    for letter in range(letters):
        points = []
        for step in range(24):
            angle = step / 23 * 2 * np.pi
            x = 400 + letter * 120 + 40 * np.sin(angle) + rng.integers(0, 3)
            y = 1000 + 60 * np.cos(angle) + rng.integers(0, 3)
            time += 0.01
            points.append(f'<Point x="{int(x)}" y="{int(y)}" time="{time:.2f}"/>')
        strokes.append(f'<Stroke colour="black" start_time="0" end_time="1">{"".join(points)}</Stroke>')
    return (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<WhiteboardCaptureSession><WhiteboardDescription>'
        '<SensorLocation corner="top_left"/><DiagonallyOppositeCoords x="6512" y="1376"/></WhiteboardDescription>'
        f"<StrokeSet>{''.join(strokes)}</StrokeSet></WhiteboardCaptureSession>\n"
    )


def write_iam_ondb(root: Path) -> Path:
    """IAM-OnDB/lineStrokes + ascii + task lists; a malformed XML, a CSR line without strokes, strokes
    without a CSR line, and a form in no task list."""
    forms = {
        "a01-000u": ["A MOVE to stop Mr. Gaitskell", "nominating any more Labour", "broken line"],
        "a01-001w": ["Though they may gather", "no ink for this line"],
        "b02-002x": ["some Labour life Peers", "are to be made."],
        "c03-003a": ["in no task list"],
    }
    base = root / "IAM-OnDB"
    for form, lines in forms.items():
        ascii_dir = base / "ascii" / form[:3] / form[:7]
        ascii_dir.mkdir(parents=True, exist_ok=True)
        ocr = "\n".join(lines)
        (ascii_dir / f"{form}.txt").write_text(
            f"Data Collection: whiteboard\n\nOCR:\n\n{ocr}\n\nCSR: \n\n{ocr}\n\n"
        )
        strokes_dir = base / "lineStrokes" / form[:3] / form[:7]
        strokes_dir.mkdir(parents=True, exist_ok=True)
        for number, _ in enumerate(lines, start=1):
            if (form, number) == ("a01-001w", 2):
                continue
            xml = (
                "<StrokeSet><Stroke>" if (form, number) == ("a01-000u", 3) else stroke_xml(number + len(form))
            )
            (strokes_dir / f"{form}-{number:02d}.xml").write_text(xml)
    (base / "lineStrokes" / "z09").mkdir()
    (base / "lineStrokes" / "z09" / "z09-999z-01.xml").write_text(stroke_xml(99))
    (base / "trainset.txt").write_text("a01-000u\nz09-999z\n")
    (base / "testset_v.txt").write_text("a01-001w\n")
    (base / "testset_f.txt").write_text("b02-002x\n")
    return base


def line_png(text: str, width: int = 360) -> Image.Image:
    image = Image.new("L", (width, 48), 255)
    ImageDraw.Draw(image).text((8, 14), text, fill=0)
    return image


def write_iam_lines(root: Path) -> Path:
    """IAM/lines/**.png, lines.txt (comments, an err line, a short line), forms.txt, task lists."""
    base = root / "IAM"
    entries = [
        ("a01-000u-00", "ok", "A|MOVE|to|stop|Mr.|Gaitskell|from"),
        ("a01-000u-01", "err", "nominating|any|more|Labour"),
        ("a01-000x-00", "ok", "A|MOVE|to|stop|it"),
        ("b01-001-00", "ok", "some|&quot;life&quot;|Peers"),
        ("b01-001-01", "ok", "broken|image"),
    ]
    lines = ["#--- lines.txt ---", "# format: a01-000u-00 ok 154 19 408 746 1661 89 A|MOVE|to"]
    for line_id, status, words in entries:
        form = line_id.rsplit("-", 1)[0]
        folder = base / "lines" / line_id[:3] / form
        folder.mkdir(parents=True, exist_ok=True)
        if line_id == "b01-001-01":
            (folder / f"{line_id}.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
        else:
            line_png(words.replace("|", " ")).save(folder / f"{line_id}.png")
        lines.append(f"{line_id} {status} 154 19 408 746 1661 89 {words}")
    lines.append("a01-000u-02 ok 157")
    (base / "lines.txt").write_text("\n".join(lines) + "\n")
    (base / "forms.txt").write_text(
        "# forms\na01-000u 000 2 prt 7 5 52 36\na01-000x 001 2 prt 7 5 52 36\nb01-001 002 1 prt 2 2 9 9\n"
    )
    (base / "trainset.txt").write_text("a01-000u-00\na01-000u-01\n")
    (base / "validationset1.txt").write_text("a01-000x-00\n")
    (base / "testset.txt").write_text("b01-001-00\nb01-001-01\n")
    return base


def write_image_folder(root: Path) -> Path:
    """pages/ of NAME.png + NAME.gt.txt, one JPEG, and an image without, a transcript without, an empty one."""
    folder = root / "pages"
    (folder / "book2").mkdir(parents=True)
    for number in range(8):
        text = f"line  number {number}\n"
        place = folder / ("book2" if number % 2 else "") / f"l{number:02d}"
        line_png(text.strip()).save(place.with_suffix(".png"))
        place.with_name(place.name + ".gt.txt").write_text(text)
    line_png("a jpeg").convert("RGB").save(folder / "photo.jpg", quality=90)
    (folder / "photo.gt.txt").write_text("a jpeg")
    line_png("orphan").save(folder / "no-text.png")
    (folder / "no-image.gt.txt").write_text("lonely transcript")
    line_png("empty").save(folder / "empty.png")
    (folder / "empty.gt.txt").write_text(" \n")
    return folder


def tree_state(root: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))
    }


def manifests(out: Path) -> dict:
    return {
        split: read_manifest(out / f"{split}.jsonl")
        for split in ("train", "dev", "test")
        if (out / f"{split}.jsonl").exists()
    }


def report(out: Path) -> dict:
    return json.loads((out / "import-report.json").read_text())


def kinds(out: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for problem in report(out)["problems"]:
        found.setdefault(problem["kind"], []).append(Path(problem["file"].split(":")[0]).name)
    return found


# ---------------------------------------------------------------- speech
def test_librispeech_tree_imports_to_shards_that_training_loads(tmp_path):
    source = write_librispeech(tmp_path / "src")
    before = tree_state(source)
    out = tmp_path / "imported"
    result = import_corpus("librispeech", [source], out, Options(samples_per_shard=4))
    sets = manifests(out)
    assert (
        {s: len(u) for s, u in sets.items()}
        == {"train": 6, "dev": 2, "test": 2}
        == {s: row["samples"] for s, row in result["splits"].items()}
    )
    first = sets["train"][0]
    assert (first.key, first.text) == ("19-198-0000", "THE KING'S DOG")  # casing kept, whitespace trimmed
    assert (
        first.info["speaker"] == "19"
        and first.info["chapter"] == "198"
        and first.info["subset"] == "train-clean-100"
    )
    assert first.info["sex"] == "F" and first.info["file"] == "train-clean-100/19/198/19-198-0000.flac"
    assert abs(first.duration - 1.2) < 1e-3 and first.shard.endswith("shards/train-0000.tar")
    assert len({u.shard for u in sets["train"]}) == 2  # 4 samples per shard
    everything = [u for split in sets.values() for u in split]
    audio, errors = load_audio(everything, RATE)
    assert not errors and set(audio) == {u.key for u in everything}
    expected = soundfile.read(source / "train-clean-100/19/198/19-198-0000.flac", dtype="float32")[0]
    assert np.abs(from_int16(audio["19-198-0000"]) - expected).max() < 1e-4
    assert kinds(out) == {
        "missing transcript": ["19-198-0009.flac"],
        "unreadable audio": ["19-198-0006.flac"],
        "missing audio": ["19-198.trans.txt"],
        "empty text": ["19-198.trans.txt"],
    }
    assert result["failed"] == 4 and result["problems_by_kind"]["unreadable audio"] == 1
    vocab = json.loads((out / "vocab.json").read_text())
    assert vocab["counts"]["'"] == 4 and vocab["counts"]["K"] == 4 and "K" in vocab["outside_task_vocabulary"]
    assert vocab["outside_after_lowercasing"] == {}
    assert tree_state(source) == before  # the source is only read
    assert not (tmp_path / "imported.partial").exists()


def test_librispeech_subset_folders_and_the_module_command(tmp_path):
    source = write_librispeech(tmp_path / "src")
    out = tmp_path / "two-subsets"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "recog.datasets.importers",
            "librispeech",
            str(source / "dev-clean"),
            str(source / "test-clean"),
            "--out",
            str(out),
            "--workers",
            "2",
        ],
        cwd=REPO,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"imported 4 samples into {out}: dev 2 (2 s), test 2 (2 s)"
    assert sorted(p.name for p in out.iterdir()) == [
        "dev.jsonl",
        "import-report.json",
        "shards",
        "test.jsonl",
        "vocab.json",
    ]
    assert (
        "no dev split" not in result.stdout and "outside recog's built-in speech vocabulary" in result.stdout
    )
    renamed = tmp_path / "my-subset"
    (source / "dev-clean").rename(renamed)
    with pytest.raises(ImporterError, match="my-subset: cannot tell its split"):
        import_corpus("librispeech", [renamed], tmp_path / "x")


@pytest.mark.skipif(
    not convert.mp3_supported(), reason="this soundfile's libsndfile cannot read or write MP3"
)
def test_common_voice_mp3_clips_become_16k_flac(tmp_path):
    out = tmp_path / "cv"
    import_corpus("commonvoice", [write_commonvoice(tmp_path / "src")], out)
    sets = manifests(out)
    assert {s: len(u) for s, u in sets.items()} == {"train": 4, "dev": 1, "test": 1}
    by_key = {u.key: u for split in sets.values() for u in split}
    assert by_key["common_voice_en_100"].text == 'He said "hello" there.'
    assert by_key["common_voice_en_101"].text == "Caf\u00e9 au lait"  # NFC
    assert by_key["common_voice_en_100"].info | {"file": None} == {
        "speaker": "aa11",
        "age": "thirties",
        "gender": "female",
        "accents": "United States English",
        "locale": "en",
        "file": None,
    }
    audio, errors = load_audio(list(by_key.values()), RATE)
    assert not errors and abs(len(audio["common_voice_en_100"]) / RATE - 1.5) < 0.1
    assert abs(by_key["common_voice_en_200"].duration - 1.0) < 1e-3
    with open(by_key["common_voice_en_100"].shard, "rb") as stream:  # stored as FLAC, not MP3
        assert b"fLaC" in stream.read()
    assert kinds(out) == {
        "missing audio": ["train.tsv"],
        "too few fields": ["train.tsv"],
        "empty text": ["dev.tsv"],
    }


def test_without_mp3_support_each_clip_is_one_line_and_the_rest_imports(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(convert, "mp3_supported", lambda: False)
    monkeypatch.setattr("recog.datasets.importers.commonvoice.mp3_supported", lambda: False)
    out = tmp_path / "cv"
    result = import_corpus("commonvoice", [write_commonvoice(tmp_path / "src", mp3=False)], out)
    assert result["imported"] == 1 and [u.key for u in read_manifest(out / "train.jsonl")] == [
        "common_voice_en_200"
    ]
    assert result["problems_by_kind"]["no mp3 support"] == 5
    problem = next(p for p in result["problems"] if p["kind"] == "no mp3 support")
    assert problem["file"].endswith("common_voice_en_100.mp3") and "\n" not in problem["reason"]
    assert "without MP3 support" in problem["reason"] and "libsndfile >= 1.1.0" in problem["reason"]
    assert "common_voice_en_100.mp3: cannot decode MP3" in capsys.readouterr().err


def test_csv_table_split_by_speaker_with_a_fixed_seed(tmp_path):
    table = write_table(tmp_path / "src")
    options = Options(dev_fraction=0.2, test_fraction=0.2, seed=3)
    result = import_corpus("csv", [table], tmp_path / "a", options)
    sets = manifests(tmp_path / "a")
    speakers = {split: {u.info["speaker"] for u in utterances} for split, utterances in sets.items()}
    assert set(sets) == {"train", "dev", "test"} and sum(map(len, sets.values())) == 12
    assert not (
        speakers["train"] & speakers["dev"]
        or speakers["train"] & speakers["test"]
        or speakers["dev"] & speakers["test"]
    )
    utterance = next(u for u in sets["train"] + sets["dev"] + sets["test"] if u.key == "wav_utt3")
    assert utterance.text == "sentence number 3, read aloud" and utterance.info["emotion"] == "calm"
    audio, errors = load_audio([utterance], RATE)  # 22.05 kHz stereo WAV -> 16 kHz mono FLAC
    assert not errors and len(audio["wav_utt3"]) == RATE and utterance.duration == 1.0
    assert sorted(kinds(tmp_path / "a")) == ["empty text", "missing audio", "too few fields"]
    assert all(p["file"].startswith(str(table)) for p in result["problems"])
    import_corpus("csv", [table], tmp_path / "b", options)
    assert (tmp_path / "a" / "dev.jsonl").read_text() == (tmp_path / "b" / "dev.jsonl").read_text()
    with pytest.raises(
        ImporterError, match="no column 'wav' .--audio-column.; it has: audio, text, speaker, emotion"
    ):
        import_corpus("csv", [table], tmp_path / "c", Options(audio_column="wav"))


# ---------------------------------------------------------------- handwriting
def test_iam_ondb_lines_become_ink_samples_with_their_csr_transcripts(tmp_path):
    out = tmp_path / "ondb"
    import_corpus("iam-ondb", [write_iam_ondb(tmp_path / "src")], out)
    sets = manifests(out)
    assert {s: [u.key for u in us] for s, us in sets.items()} == {
        "train": ["a01-000u-01", "a01-000u-02"],
        "dev": ["a01-001w-01"],
        "test": ["b02-002x-01", "b02-002x-02"],
    }
    assert [u.text for u in sets["train"]] == ["A MOVE to stop Mr. Gaitskell", "nominating any more Labour"]
    assert sets["test"][0].info["form"] == "b02-002x" and sets["test"][0].duration > 2
    config = load_config(REPO / "configs/iam-ondb-tiny.yaml", [])
    everything = [u for split in sets.values() for u in split]
    ink = modality_for("ink", config.strokes)
    loaded = ink.load(everything)
    assert not loaded.errors and set(loaded.stored) == {u.key for u in everything}
    chars = sorted({c for u in everything for c in u.text})
    kept, problems = preflight(everything, loaded, Vocab(chars), ink, stack=config.model.stack)
    assert len(kept) == len(everything) and not problems  # long enough for CTC after stacking
    assert kinds(out) == {
        "unreadable ink": ["a01-000u-03.xml"],
        "missing ink": ["a01-001w.txt"],
        "missing transcript": ["z09-999z-01.xml"],
        "not in a split list": ["c03-003a-01.xml"],
    }
    assert "malformed XML" in next(
        p["reason"] for p in report(out)["problems"] if p["kind"] == "unreadable ink"
    )


def test_iam_lines_with_task_lists_writers_and_bad_lines(tmp_path):
    out = tmp_path / "iam"
    import_corpus("iam-lines", [write_iam_lines(tmp_path / "src")], out)
    sets = manifests(out)
    assert {s: [u.key for u in us] for s, us in sets.items()} == {
        "train": ["a01-000u-00", "a01-000u-01"],
        "dev": ["a01-000x-00"],
        "test": ["b01-001-00"],
    }
    first = sets["train"][0]
    assert first.text == "A MOVE to stop Mr. Gaitskell from" and first.info["writer"] == "000"
    assert sets["train"][1].info["status"] == "err" and first.info["width"] == 360
    assert sets["test"][0].text == 'some "life" Peers'  # lines.txt writes quotes as &quot;
    everything = [u for split in sets.values() for u in split]
    image = modality_for("image", load_config(REPO / "configs/iam-lines-tiny.yaml", []).image)
    loaded = image.load(everything)
    assert not loaded.errors and all(loaded.frames[u.key] > 100 for u in everything)
    assert kinds(out) == {"too few fields": ["lines.txt"], "unreadable image": ["b01-001-01.png"]}


def test_image_folder_with_gt_txt_and_fraction_splits(tmp_path):
    out = tmp_path / "folder"
    result = import_corpus(
        "images", [write_image_folder(tmp_path / "src")], out, Options(dev_fraction=0.25, test_fraction=0.25)
    )
    sets = manifests(out)
    assert {s: len(u) for s, u in sets.items()} == {"train": 5, "dev": 2, "test": 2}
    by_key = {u.key: u for split in sets.values() for u in split}
    assert by_key["book2_l01"].text == "line number 1" and by_key["photo"].text == "a jpeg"
    image = modality_for("image", load_config(REPO / "configs/iam-lines-tiny.yaml", []).image)
    loaded = image.load(list(by_key.values()))
    assert not loaded.errors and loaded.stored["photo"].startswith(b"\x89PNG")  # the JPEG stored as PNG
    assert kinds(out) == {
        "missing transcript": ["no-text.png"],
        "empty text": ["empty.gt.txt"],
        "missing image": ["no-image.gt.txt"],
    }
    assert result["splits"]["train"] == {"samples": 5, "manifest": "train.jsonl", "shards": 1}


# ---------------------------------------------------------------- the output folder and the command line
def test_output_folder_rules(tmp_path):
    source = write_image_folder(tmp_path / "src")
    with pytest.raises(ImporterError, match="must lie outside the source"):
        import_corpus("images", [source], source / "out")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(ImporterError, match="not empty and not the output of a previous import"):
        import_corpus("images", [source], foreign)
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    import_corpus("images", [source], empty, Options(samples_per_shard=2))
    assert len(list((empty / "shards").iterdir())) == 5
    import_corpus("images", [source], empty, Options(samples_per_shard=4))  # an earlier import: replaced
    assert sorted(p.name for p in (empty / "shards").iterdir()) == [
        "train-0000.tar",
        "train-0001.tar",
        "train-0002.tar",
    ]
    assert report(empty)["options"]["samples_per_shard"] == 4
    assert not any(p.name.startswith("empty.") for p in tmp_path.iterdir())
    (empty / "shards" / "keep-me.txt").write_text("mine")
    with pytest.raises(ImporterError, match=r"holds files the import did not write \(shards/keep-me.txt\)"):
        import_corpus("images", [source], empty)
    assert (empty / "shards" / "keep-me.txt").read_text() == "mine" and (empty / "train.jsonl").exists()

    stale = tmp_path / "fresh.partial"  # left by an interrupted import: cleaned; anything else: refused
    (stale / "shards").mkdir(parents=True)
    (stale / ".recog-data-import").write_text("")
    (stale / "shards" / "train-0000.tar").write_bytes(b"")
    import_corpus("images", [source], tmp_path / "fresh")
    assert not stale.exists() and (tmp_path / "fresh" / "train.jsonl").exists()
    (tmp_path / "other.partial").mkdir()
    with pytest.raises(ImporterError, match="other.partial: exists and is not a folder this tool left"):
        import_corpus("images", [source], tmp_path / "other")


def test_one_import_per_out_and_an_interrupted_one_leaves_nothing(tmp_path, monkeypatch):
    source = write_image_folder(tmp_path / "src")
    running = output.prepare(tmp_path / "out", [source])  # another import holds OUT.partial
    with pytest.raises(ImporterError, match="out.partial: another import is writing it now"):
        import_corpus("images", [source], tmp_path / "out")
    running.abandon()
    assert not (tmp_path / "out.partial").exists()

    def interrupted(job):
        raise KeyboardInterrupt

    monkeypatch.setattr("recog.datasets.importers.writer.convert", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_corpus("images", [source], tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_nothing_imported_exits_non_zero_with_a_report(tmp_path, capsys):
    source = tmp_path / "src"
    source.mkdir()
    line_png("x").save(source / "alone.png")
    assert cli.main(["images", str(source), "--out", str(tmp_path / "out")]) == 1
    assert report(tmp_path / "out")["imported"] == 0 and kinds(tmp_path / "out") == {
        "missing transcript": ["alone.png"]
    }
    assert cli.main(["images", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")]) == 2
    assert capsys.readouterr().err.strip().endswith("nowhere: source not found")


def test_add_parser_gives_recog_a_data_import_command(tmp_path):
    parser = argparse.ArgumentParser(prog="recog")
    cli.add_parser(parser.add_subparsers(dest="command", required=True))
    table = write_table(tmp_path / "src")
    args = parser.parse_args(
        ["data", "import", "csv", str(table), "--out", str(tmp_path / "out"), "--dev-fraction", "0.3"]
    )
    assert args.func(args) == 0 and len(read_manifest(tmp_path / "out" / "dev.jsonl")) >= 3


def test_import_then_train_the_tiny_librispeech_config(tmp_path):
    """The user's path end to end: a LibriSpeech-format tree -> recog data import -> recog train."""
    source = write_librispeech(tmp_path / "src")  # upper case, as LibriSpeech writes it
    corpus = tmp_path / "corpus"
    assert import_corpus("librispeech", [source], corpus)["failed"] == 4
    out = tmp_path / "run"
    run_recog(
        "train",
        "configs/librispeech-tiny.yaml",
        "--out",
        str(out),
        "--set",
        f"data.root={corpus}",
        timeout=300,
    )
    result = json.loads((out / "report.json").read_text())
    assert set(result["sets"]) == {"dev", "test"} and result["train_steps"] == 6
    assert set(result["sets"]["test"]["greedy"]["groups"]) == {"test-clean"}
    # trained on the lower-cased transcripts (text.case: lower), scored against them too
    assert {e["ref"] for e in result["sets"]["test"]["greedy"]["examples"]} == {"the king's dog", "ran home"}
    payload = load_checkpoint(out / "best.pt")
    assert payload["text"]["case"] == "lower" and "".join(payload["vocab"]) == DEFAULT_CHARS
    evaluated = run_recog(
        "eval", "--model", str(out / "best.pt"), str(corpus / "test.jsonl"), "-o", str(out / "e.json")
    )
    assert "skipped" not in evaluated.stderr  # the upper-case references are folded as in training
    assert json.loads((out / "e.json").read_text())["sets"]["test"]["greedy"]["cer"] == pytest.approx(
        result["sets"]["test"]["greedy"]["cer"]
    )


def test_import_then_train_iam_lines_with_the_corpus_vocabulary(tmp_path):
    """IAM lines keep case, digits and punctuation: text.vocab: corpus makes them the model's characters."""
    corpus = tmp_path / "corpus"
    import_corpus("iam-lines", [write_iam_lines(tmp_path / "src")], corpus)
    out = tmp_path / "run"
    run_recog(
        "train", "configs/iam-lines-tiny.yaml", "--out", str(out), "--set", f"data.root={corpus}", timeout=300
    )
    payload = load_checkpoint(out / "best.pt")
    train = [u.text for u in read_manifest(corpus / "train.jsonl")]
    assert set(payload["vocab"]) == {c for t in train for c in t} | {" "}  # the training lines' characters
    assert {"A", "M", "."} <= set(payload["vocab"]) and payload["text"]["vocab"] == "corpus"
    preflight = json.loads((out / "preflight.json").read_text())
    assert preflight["train"]["skipped"] == 0  # nothing left out for its characters
    assert set(json.loads((out / "report.json").read_text())["sets"]) == {"dev", "test"}
