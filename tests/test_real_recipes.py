"""`make train-speech / train-handwriting / train-handwriting-offline DATA=...`: fixture trees in the real
LibriSpeech, IAM-OnDB and IAM layouts, imported once and trained with the tiny configs through make;
a second run reuses the import; a wrong DATA or a foreign corpus folder is one line and exit 2."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import REPO, subprocess_env
from test_importers import tree_state, write_iam_lines, write_iam_ondb, write_librispeech

from pipelines import train_real
from recog.checkpoint import load_checkpoint
from recog.datasets.importers import import_corpus
from recog.datasets.manifest import read_manifest


def make(target: str, timeout: float = 300, **variables: str | Path) -> subprocess.CompletedProcess:
    """Run `make TARGET NAME=value...` in the repo, with the set-up stamp taken as done."""
    env = {k: v for k, v in subprocess_env().items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")}
    command = ["make", "--no-print-directory", "-o", ".venv/.setup-done", target]
    command += [f"{name}={value}" for name, value in variables.items()]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def copy_subset(libri: Path, source: str, target: str, speaker: str, new_speaker: str) -> None:
    """A new LibriSpeech subset made of one speaker of another, renamed (its own utterance ids)."""
    for path in sorted((libri / source / speaker).rglob("*")):
        place = libri / target / path.relative_to(libri / source).as_posix().replace(speaker, new_speaker)
        if path.is_dir():
            place.mkdir(parents=True, exist_ok=True)
        elif path.suffix == ".txt":
            place.write_text(path.read_text().replace(f"{speaker}-", f"{new_speaker}-"))
        else:
            shutil.copyfile(path, place)


def test_train_speech_with_data_imports_once_trains_and_reports(tmp_path):
    libri = write_librispeech(tmp_path / "download")
    copy_subset(libri, "dev-clean", "dev-other", "84", "85")
    copy_subset(libri, "train-clean-100", "train-other-500", "26", "27")  # not part of the 100 h recipe
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    tiny = {"CONFIG": "configs/librispeech-tiny.yaml", "CORPUS": corpus, "RUN": run}
    first = make("train-speech", DATA=libri, **tiny)
    assert first.returncode == 0, first.stderr[-3000:]
    imported = json.loads((corpus / "import-report.json").read_text())
    assert imported["sources"] == [
        str(libri / s) for s in ("train-clean-100", "dev-clean", "test-clean", "dev-other")
    ]
    assert {u.info["subset"] for u in read_manifest(corpus / "train.jsonl")} == {"train-clean-100"}
    report = json.loads((run / "report.json").read_text())
    assert report["train_steps"] == 6 and set(report["sets"]) == {"dev", "test"}
    assert set(report["sets"]["dev"]["greedy"]["groups"]) == {"dev-clean", "dev-other"}
    assert report["import"]["imported"] == 12 and report["import"]["failed"] == 4
    assert report["corpus"] == str(corpus) and report["config"] == "configs/librispeech-tiny.yaml"
    assert load_checkpoint(run / "best.pt")["text"]["case"] == "lower"

    # the folder that holds LibriSpeech/ names the same download: the import is reused, training reruns
    before = tree_state(corpus)
    (run / "best.pt").unlink()
    second = make("train-speech", DATA=libri.parent, **tiny)
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"{corpus}: already holds this import (12 samples" in second.stdout
    assert "recog data import" not in second.stdout and tree_state(corpus) == before
    assert (run / "best.pt").is_file()


def test_train_handwriting_with_data_imports_iam_ondb_and_trains(tmp_path):
    ondb = write_iam_ondb(tmp_path / "download")
    dev_form = ondb / "ascii" / "a01" / "a01-001" / "a01-001w.txt"  # its "Th" never occurs in training
    dev_form.write_text(dev_form.read_text().replace("Though they may gather", "stop any more Labour"))
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    result = make(
        "train-handwriting",
        DATA=ondb,
        CONFIG="configs/iam-ondb-tiny.yaml",
        CORPUS=corpus,
        RUN=run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert set(report["sets"]) == {"dev", "test"} and report["import"]["splits"]["test"]["samples"] == 2
    vocab = load_checkpoint(run / "best.pt")["vocab"]
    assert {"A", "M", "."} <= set(vocab)  # text.vocab: corpus keeps IAM's case and punctuation


def test_train_handwriting_offline_with_data_imports_iam_lines_and_trains(tmp_path):
    corpus, run = tmp_path / "corpus", tmp_path / "run"
    result = make(
        "train-handwriting-offline",
        DATA=write_iam_lines(tmp_path / "download"),
        CONFIG="configs/iam-lines-tiny.yaml",
        CORPUS=corpus,
        RUN=run,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((run / "report.json").read_text())
    assert report["import"]["format"] == "iam-lines" and set(report["sets"]) == {"dev", "test"}
    assert set(report["sets"]["dev"]["greedy"]["groups"]) == {"ok"}
    assert load_checkpoint(run / "best.pt")["text"]["vocab"] == "corpus"


def test_without_data_the_targets_run_the_generated_corpus_recipes():
    for target, command in (
        ("train-speech", "pipelines.train_speech --config configs/speech.yaml --out runs/speech"),
        ("train-handwriting", "pipelines.train_handwriting --config configs/handwriting.yaml"),
    ):
        result = subprocess.run(
            ["make", "--no-print-directory", "-n", "-o", ".venv/.setup-done", target],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        assert result.stdout.strip() == f".venv/bin/python -m {command}" + (
            " --out runs/handwriting" if target == "train-handwriting" else ""
        )


def error_line(capsys, *argv: str | Path) -> str:
    assert train_real.main([str(a) for a in argv]) == 2
    captured = capsys.readouterr()
    assert not captured.out and captured.err.count("\n") == 1, captured.err
    return captured.err.strip()


def test_a_wrong_data_folder_or_corpus_folder_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert error_line(capsys, "librispeech", "--data", missing).startswith(
        f"train_real: DATA={missing}: not found"
    )
    iam = write_iam_lines(tmp_path / "iam")
    line = error_line(capsys, "librispeech", "--data", iam)
    assert f"DATA={iam}: no train-clean-100, dev-clean, test-clean in it" in line
    line = error_line(capsys, "iam-ondb", "--data", iam)
    assert "no lineStrokes, ascii, testset_v.txt or testset_t.txt, testset_f.txt" in line
    (iam / "testset.txt").unlink()
    assert "no testset.txt in it" in error_line(capsys, "iam-lines", "--data", iam)
    ondb = write_iam_ondb(tmp_path / "ondb")
    line = error_line(capsys, "iam-ondb", "--data", ondb, "--config", "configs/iam-lines-tiny.yaml")
    assert line == "train_real: configs/iam-lines-tiny.yaml: task is 'image', this recipe trains ink models"

    # a corpus folder holding someone's files, or an import of another download, is left as it is
    libri = write_librispeech(tmp_path / "libri")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    tiny = ["--config", "configs/librispeech-tiny.yaml", "--corpus", mine, "--out", tmp_path / "run"]
    assert train_real.main(["librispeech", "--data", str(libri), *map(str, tiny)]) == 2
    assert "not the output of a previous import" in capsys.readouterr().err
    assert os.listdir(mine) == ["notes.txt"] and not (tmp_path / "run").exists()
    other = tmp_path / "other-import"
    import_corpus("iam-ondb", [ondb], other)
    capsys.readouterr()
    before = tree_state(other)
    line = error_line(capsys, "librispeech", "--data", libri, *tiny[:2], "--corpus", other)
    assert line.startswith(f"train_real: {other}: holds an import of {ondb} (iam-ondb), not of {libri}")
    assert tree_state(other) == before


def test_which_earlier_imports_are_reused_replaced_or_refused(tmp_path):
    libri = write_librispeech(tmp_path / "download")
    three = [libri / s for s in ("train-clean-100", "dev-clean", "test-clean")]
    corpus = tmp_path / "corpus"
    assert train_real.already_imported("librispeech", corpus, three) is None  # nothing there yet
    import_corpus("librispeech", three, corpus)
    assert train_real.already_imported("librispeech", corpus, three)["imported"] == 10
    with_other = [*three, libri / "test-other"]  # the same download with a subset more: import again
    assert train_real.already_imported("librispeech", corpus, with_other) is None
    (corpus / "test.jsonl").unlink()  # damaged: imported again (the importer replaces its own output)
    assert train_real.already_imported("librispeech", corpus, three) is None
    elsewhere = [tmp_path / "copy" / path.name for path in three]
    with pytest.raises(
        train_real.RecipeError, match="corpus: holds an import of .*download/LibriSpeech/dev-clean"
    ):
        train_real.already_imported("librispeech", corpus, elsewhere)
