"""End to end through the `recog` command line on the generated tiny corpus: train, kill and resume,
evaluate, transcribe, config errors, and a two-process (gloo) torchrun."""

from __future__ import annotations

import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import REPO, run_recog, subprocess_env, synthesize

from recog.config import load_config
from recog.datasets.manifest import read_manifest

TINY = "configs/speech-tiny.yaml"
EPOCHS = 3
# The tiny config trains for many epochs; the tests need the machinery, not accuracy.
QUICK = [f"train.max_epochs={EPOCHS}", "train.eval_every=0", "train.log_every=1", "train.threads=1"]


def overrides(corpus: Path, *extra: str) -> list[str]:
    args = ["--set", f"data.root={corpus}"]
    for item in (*QUICK, *extra):
        args += ["--set", item]
    return args


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def trained(tiny_corpus, tmp_path_factory) -> dict:
    """One short training run of the tiny config; several tests read its outputs."""
    out = tmp_path_factory.mktemp("run") / "tiny"
    result = run_recog("train", TINY, "--out", str(out), *overrides(tiny_corpus), timeout=600)
    return {"out": out, "corpus": tiny_corpus, "stdout": result.stdout, "stderr": result.stderr}


def test_train_writes_the_run_folder_and_a_report(trained):
    out = trained["out"]
    for name in ("best.pt", "last.pt", "metrics.jsonl", "report.json", "curves.png", "config.json"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    assert (out / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    report = json.loads((out / "report.json").read_text())
    assert set(report["sets"]) == {"dev", "test"}
    for name in ("dev", "test"):
        manifest = read_manifest(trained["corpus"] / f"{name}.jsonl")
        for kind in ("greedy", "beam"):
            row = report["sets"][name][kind]
            assert 0.0 <= row["cer"] <= 1.5 and 0.0 <= row["wer"] <= 1.5
            assert row["utterances"] == len(manifest) and row["words"] == sum(
                len(u.text.split()) for u in manifest
            )
            assert set(row["groups"]) == {u.info["voice"] for u in manifest}  # per voice
            assert row["examples"] and all(set(e) == {"key", "ref", "hyp"} for e in row["examples"])
    # the printed table carries the same numbers as the report
    test_greedy = report["sets"]["test"]["greedy"]
    table_row = next(line for line in trained["stdout"].splitlines() if line.split()[:2] == ["test", "all"])
    assert table_row.split()[3:5] == [f"{100 * test_greedy['wer']:.1f}", f"{100 * test_greedy['cer']:.1f}"]

    metrics = read_metrics(out / "metrics.jsonl")
    train_steps = [entry["step"] for entry in metrics if entry["kind"] == "train"]
    assert train_steps == list(range(1, len(train_steps) + 1))  # every step once, log_every=1
    assert report["train_steps"] == train_steps[-1] == EPOCHS * (train_steps[-1] // EPOCHS)
    assert all(entry["loss"] > 0 and entry["lr"] > 0 for entry in metrics if entry["kind"] == "train")
    evals = [entry for entry in metrics if entry["kind"] == "eval"]
    assert [entry["epoch"] for entry in evals][:EPOCHS] == list(range(1, EPOCHS + 1))  # one per epoch
    assert json.loads((out / "config.json").read_text())["train"]["max_epochs"] == EPOCHS


def test_checkpoints_are_self_contained(trained):
    from recog.checkpoint import load_checkpoint
    from recog.recognizer import Recognizer

    best = load_checkpoint(trained["out"] / "best.pt")
    assert best["vocab"] == list(" 'abcdefghijklmnopqrstuvwxyz")
    assert best["cmvn"]["mean"].shape == (best["input_dim"],)
    assert "\\data\\" in best["language_model"]["arpa"] and "\t" in best["language_model"]["lexicon"]
    assert "train_state" not in best  # inference checkpoint: no optimizer
    last = load_checkpoint(trained["out"] / "last.pt")
    assert last["train_state"]["state"]["finished"] is True
    recognizer = Recognizer.load(trained["out"] / "best.pt")
    assert recognizer.model.config == load_config(REPO / TINY).model and not recognizer.model.training


def test_each_evaluation_is_recorded_once(trained):
    evals = [
        entry["step"] for entry in read_metrics(trained["out"] / "metrics.jsonl") if entry["kind"] == "eval"
    ]
    assert len(evals) == len(set(evals))


def test_kill_minus_nine_then_resume_continues_where_it_stopped(tiny_corpus, tmp_path):
    from recog.checkpoint import load_checkpoint

    out = tmp_path / "run"
    epochs = 2 * EPOCHS  # enough steps to be killed between two checkpoints even with one batch per epoch
    args = ["train", TINY, "--out", str(out), *overrides(tiny_corpus, "train.checkpoint_every=4")]
    args += ["--set", f"train.max_epochs={epochs}"]
    # a loader worker draws batches ahead of training: the saved position must count trained batches only
    args += ["--set", "data.workers=1", "--set", "data.batch_frames=2500"]
    # with a moving average of the weights: last.pt must give training back its raw weights and the average
    args += ["--set", "train.ema_decay=0.9"]
    log = (tmp_path / "first.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "recog.cli", *args], cwd=REPO, env=subprocess_env(), stdout=log, stderr=log
    )
    metrics_path = out / "metrics.jsonl"
    deadline = time.monotonic() + 300
    try:
        # wait for the first checkpoint (step 4) and two more logged steps, then kill without warning
        while True:
            assert process.poll() is None, (
                f"training ended before it could be killed:\n{(tmp_path / 'first.log').read_text()[-3000:]}"
            )
            assert time.monotonic() < deadline, "no checkpoint within 300 s"
            if (out / "last.pt").exists() and metrics_path.exists():
                complete = metrics_path.read_text().split("\n")[:-1]  # lines still being written are skipped
                steps = [e["step"] for e in map(json.loads, complete) if e["kind"] == "train"]
                if steps and steps[-1] >= 6:
                    break
            time.sleep(0.05)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
        log.close()
    assert process.returncode == -signal.SIGKILL
    assert not (out / "report.json").exists()
    killed = load_checkpoint(out / "last.pt")
    saved_step = killed["train_state"]["state"]["step"]
    assert saved_step == 4  # killed between the checkpoints at steps 4 and 8
    before = read_metrics(metrics_path)
    killed_losses = {e["step"]: e["loss"] for e in before if e["kind"] == "train"}
    killed_losses_lr = {e["step"]: e["lr"] for e in before if e["kind"] == "train"}

    result = run_recog(*args, "--resume", timeout=600)
    assert f"resumed from {out / 'last.pt'} at step {saved_step}" in result.stderr
    after = read_metrics(metrics_path)
    # the log up to the checkpoint is kept as it was; what the killed run logged after it is cut off
    # (those steps are trained again), so each step is in the log once
    assert [e for e in after if e["step"] < saved_step] == [e for e in before if e["step"] < saved_step]
    resumed = [e for e in after if e["kind"] == "train" and e["step"] > saved_step]
    assert resumed, "the resumed run logged no training steps"
    batches = int(re.search(r"(\d+) batches per epoch", (tmp_path / "first.log").read_text()).group(1))
    total = epochs * batches
    assert [e["step"] for e in after if e["kind"] == "train"] == list(range(1, total + 1))  # not from 0
    # exact resume (weights, optimizer moments, schedule, batch order): the steps after the checkpoint
    # repeat what the killed run computed
    for entry in resumed[:2]:
        assert entry["loss"] == pytest.approx(killed_losses[entry["step"]], rel=1e-3), entry["step"]
        assert entry["lr"] == pytest.approx(killed_losses_lr[entry["step"]], rel=1e-6)
    last_payload = load_checkpoint(out / "last.pt")
    last = last_payload["train_state"]["state"]
    assert last["finished"] is True and last["step"] == total
    # the average (model_state, what inference loads) differs from the raw weights training goes on from
    name = next(iter(killed["model_state"]))
    assert not torch.equal(killed["model_state"][name], killed["raw_model_state"][name])
    assert not torch.equal(last_payload["model_state"][name], last_payload["raw_model_state"][name])
    report = json.loads((out / "report.json").read_text())
    assert report["train_steps"] == total and set(report["sets"]) == {"dev", "test"}


def test_eval_prints_a_wer_cer_table_matching_the_training_report(trained, tmp_path):
    out, corpus = trained["out"], trained["corpus"]
    result = run_recog(
        "eval", "--model", str(out / "best.pt"), str(corpus / "test.jsonl"), "-o", str(tmp_path / "r.json")
    )
    header = result.stdout.splitlines()[0].split()
    assert header[:3] == ["set", "group", "utts"] and "WER" in header and "CER" in header
    row = next(line.split() for line in result.stdout.splitlines() if line.split()[:2] == ["test", "all"])
    expected = json.loads((out / "report.json").read_text())["sets"]["test"]
    assert row[2] == str(len(read_manifest(corpus / "test.jsonl")))
    assert row[3:7] == [
        f"{100 * expected[kind][metric]:.1f}" for kind in ("greedy", "beam") for metric in ("wer", "cer")
    ]
    written = json.loads((tmp_path / "r.json").read_text())["sets"]["test"]
    assert written["greedy"]["cer"] == pytest.approx(expected["greedy"]["cer"])
    assert written["beam"]["wer"] == pytest.approx(expected["beam"]["wer"])


def test_transcribe_writes_one_json_line_per_input_and_survives_a_bad_file(trained, tmp_path):
    from recog.audio import read_audio
    from recog.recognizer import Recognizer

    first = synthesize("the cat sat on the mat", tmp_path / "first.wav")
    second = synthesize("good morning", tmp_path / "second.wav", voice="en-gb")
    bad = tmp_path / "bad.wav"
    bad.write_text("not audio")
    model = str(trained["out"] / "best.pt")
    result = run_recog("transcribe", "--greedy", "--model", model, str(first), str(bad), str(second))
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["path"] for line in lines] == [str(first), str(bad), str(second)]  # the batch went on
    recognizer = Recognizer.load(model)
    for line, path in ((lines[0], first), (lines[2], second)):
        assert set(line) == {"path", "text", "words", "duration", "error", "model"}
        assert line["error"] is None
        samples = read_audio(path)
        assert line["duration"] == pytest.approx(len(samples) / 16000)
        # the command line gives exactly what the library gives
        expected = recognizer.decode(recognizer.log_probs([samples]))[0]
        assert line["text"] == expected.text
        assert [w["word"] for w in line["words"]] == [w.word for w in expected.words]
        assert all(0 <= w["start"] < w["end"] <= line["duration"] + 0.1 for w in line["words"])
    assert lines[1]["text"] is None and lines[1]["words"] == []
    assert lines[1]["error"].startswith(f"{bad}: ")

    # beam search (recog's decoder with the checkpoint's lexicon and LM) gives what the library gives
    beam = run_recog("transcribe", "--beam", "--model", model, str(first), "-o", str(tmp_path / "out.jsonl"))
    assert beam.stdout == ""
    (entry,) = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    expected = recognizer.decode(recognizer.log_probs([read_audio(first)]), "beam")[0]
    assert type(recognizer.decoder("beam")).__name__ == "CTCBeamDecoder"
    assert entry["error"] is None and entry["text"] == expected.text
    assert [w["word"] for w in entry["words"]] == [w.word for w in expected.words]

    # the default is that beam search; --nbest adds the n best texts, best first, with their scores
    (entry,) = [
        json.loads(line)
        for line in run_recog("transcribe", "--model", model, str(first), "--nbest", "3").stdout.splitlines()
    ]
    assert entry["text"] == expected.text and entry["nbest"][0]["text"] == entry["text"]
    assert 1 <= len(entry["nbest"]) <= 3 and len({n["text"] for n in entry["nbest"]}) == len(entry["nbest"])
    assert [n["score"] for n in entry["nbest"]] == sorted((n["score"] for n in entry["nbest"]), reverse=True)
    (tmp_path / "hot.txt").write_text("# names\nthe mat 4\nzoë\n")
    for extra, message in (
        (["--greedy", "--nbest", "2"], "--greedy cannot be combined with --nbest"),
        (["--hotwords", str(tmp_path / "hot.txt")], "hotwords have characters this model cannot write: 'ë'"),
        (["--hotwords", str(tmp_path / "none.txt")], "none.txt: hotwords file not found"),
    ):
        refused = run_recog("transcribe", "--model", model, str(first), *extra, check=False)
        assert refused.returncode == 2 and message in refused.stderr and len(refused.stderr.splitlines()) == 1

    # nothing usable at all: a non-zero exit, still one line per input
    failed = run_recog("transcribe", "--model", model, str(bad), check=False)
    assert failed.returncode != 0
    assert json.loads(failed.stdout)["error"]


def test_a_step_budget_ends_the_schedule_and_the_run_at_that_step(tiny_corpus, tmp_path):
    out = tmp_path / "steps"
    extra = ("train.max_epochs=50", "train.max_steps=4", "train.warmup_steps=1", "train.max_minutes=0")
    result = run_recog("train", TINY, "--out", str(out), *overrides(tiny_corpus, *extra), timeout=600)
    assert "step budget of 4 steps reached" in result.stdout + result.stderr
    steps = [entry for entry in read_metrics(out / "metrics.jsonl") if entry["kind"] == "train"]
    assert [entry["step"] for entry in steps] == [1, 2, 3, 4]
    # cosine over 4 steps, not over 50 epochs: the 4th step ran at progress 3/4
    ratio = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * 0.75))
    assert steps[-1]["lr"] == pytest.approx(0.003 * ratio, rel=1e-3)


def test_unknown_config_key_fails_at_once_naming_the_key(tmp_path):
    out = tmp_path / "never"
    result = run_recog("train", TINY, "--out", str(out), "--set", "train.lrr=0.1", check=False, timeout=60)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == ["recog: ConfigError: unknown config key 'train.lrr'"]
    assert "Traceback" not in result.stderr and result.stdout == ""
    assert not out.exists()
    missing = run_recog("transcribe", "--model", str(tmp_path / "nope.pt"), "x.wav", check=False, timeout=60)
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    assert f"{tmp_path / 'nope.pt'}: checkpoint not found" in missing.stderr


def run_group(command: list[str], timeout: float) -> subprocess.CompletedProcess:
    """Run a command in its own process group; on timeout kill the whole group (torchrun and its workers)."""
    process = subprocess.Popen(
        command, cwd=REPO, env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate()
        pytest.fail(f"{' '.join(command[:6])} ... hung for {timeout} s:\n{stderr[-3000:]}")
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr)


def test_two_process_torchrun_with_gloo(trained, tmp_path):
    corpus = trained["corpus"]
    out = tmp_path / "ddp"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "recog.cli", "train", TINY, "--out", str(out),
        *overrides(corpus),
    ]  # fmt: skip
    result = run_group(command, timeout=240)
    assert result.returncode == 0, result.stderr[-5000:]
    assert "2 process(es)" in result.stderr
    report = json.loads((out / "report.json").read_text())
    assert set(report["sets"]) == {"dev", "test"}
    assert {"greedy", "beam"} <= set(report["sets"]["test"])
    # each rank trained on half the batches: half the optimizer steps of the one-process run
    single = json.loads((trained["out"] / "report.json").read_text())["train_steps"]
    assert report["train_steps"] == EPOCHS * ((single // EPOCHS) // 2)
    steps = [e["step"] for e in read_metrics(out / "metrics.jsonl") if e["kind"] == "train"]
    assert steps == list(range(1, report["train_steps"] + 1))  # only rank 0 writes the log
