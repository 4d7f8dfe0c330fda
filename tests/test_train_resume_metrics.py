"""A resumed run's metrics.jsonl holds each step once (issue 22): the lines a killed run wrote after its
last checkpoint are cut off on resume, since the resumed run trains (and logs) those steps again.

In-process on a hand-made corpus of a few ink lines and a tiny model: seconds, not minutes."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest

from recog.checkpoint import load_checkpoint, save_checkpoint
from recog.config import load_config
from recog.distributed import init_distributed, shutdown
from recog.ink import Ink, encode_ink
from recog.train import Trainer

TEXTS = ["a b", "ab", "ba", "a", "b", "aab", "bba", "b a"]


def letter(kind: str, left: float) -> list[np.ndarray]:
    """'a': a closed loop with a tail; 'b': a tall stroke and a bowl; ' ': nothing (a gap)."""
    t = np.linspace(0, 2 * np.pi, 24)
    if kind == "a":
        return [np.stack([left + 10 + 8 * np.cos(t), -10 + 8 * np.sin(t)], axis=1)]
    if kind == "b":
        stem = np.stack([np.full(16, left + 2.0), np.linspace(-30, 0, 16)], axis=1)
        return [stem, np.stack([left + 10 + 8 * np.cos(t), -8 + 8 * np.sin(t)], axis=1)]
    return []


def write_corpus(root: Path) -> None:
    root.mkdir(parents=True)
    shard = root / "shard-000.tar"
    with tarfile.open(shard, "w") as archive:
        for number, text in enumerate(TEXTS):
            strokes = [s for index, char in enumerate(text) for s in letter(char, 24.0 * index)]
            data = encode_ink(Ink(strokes))
            info = tarfile.TarInfo(f"line{number}.ink.npz")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    lines = [
        json.dumps({"key": f"line{n}", "shard": shard.name, "text": text}) for n, text in enumerate(TEXTS)
    ]
    (root / "train.jsonl").write_text("\n".join(lines) + "\n")
    (root / "dev.jsonl").write_text("\n".join(lines[:3]) + "\n")


@pytest.fixture
def config(tmp_path):
    write_corpus(tmp_path / "corpus")
    values = {
        "data.root": str(tmp_path / "corpus"), "data.prepare": "", "data.batch_frames": 150,
        "data.max_batch": 2, "data.workers": 0, "data.lm_text": "",
        "model.hidden": 8, "model.layers": 1, "model.stack": 1, "model.dropout": 0.0,
        "writer.prob": 0.5, "train.max_epochs": 3, "train.eval_every": 3, "train.log_every": 1,
        "train.checkpoint_every": 4, "train.warmup_steps": 2, "train.threads": 1, "train.patience": 100,
    }  # fmt: skip
    return load_config(None, ["task=ink", *(f"{key}={value}" for key, value in values.items())])


class Killed(Exception):
    """Stands in for kill -9 at a chosen step."""


def entries(path: Path) -> list[tuple[str, int]]:
    return [(entry["kind"], entry["step"]) for entry in map(json.loads, path.read_text().splitlines())]


def train_until(config, out: Path, resume: bool, kill_at: int | None = None) -> Trainer:
    context = init_distributed()
    try:
        trainer = Trainer(config, out, context)
        if resume:
            assert trainer.resume()
        if kill_at is not None:
            record = trainer.record

            def record_then_die(entry: dict) -> None:
                record(entry)
                if entry["kind"] == "train" and entry["step"] == kill_at:
                    raise Killed

            trainer.record = record_then_die
            with pytest.raises(Killed):
                trainer.fit()
        else:
            trainer.fit()
        return trainer
    finally:
        shutdown(context)


@pytest.mark.parametrize("kill_at", [7, 9])  # after the checkpoints at steps 4 and 8
def test_a_resumed_run_logs_each_step_once(config, tmp_path, kill_at):
    reference_out, out = tmp_path / "reference", tmp_path / "run"
    reference = train_until(config, reference_out, resume=False)
    total = reference.state.step
    assert total > 8, "the test needs steps after the second checkpoint"

    train_until(config, out, resume=False, kill_at=kill_at)
    killed = entries(out / "metrics.jsonl")
    assert ("train", kill_at) in killed
    resumed = train_until(config, out, resume=True)

    logged = entries(out / "metrics.jsonl")
    train_steps = [step for kind, step in logged if kind == "train"]
    eval_steps = [step for kind, step in logged if kind == "eval"]
    assert train_steps == list(range(1, total + 1))  # each step once, in order
    assert len(eval_steps) == len(set(eval_steps))
    assert logged == entries(reference_out / "metrics.jsonl")  # what an uninterrupted run logs
    assert resumed.state.step == total
    kept = killed.index(("train", 8 if kill_at > 8 else 4)) + 1  # up to the last checkpoint
    assert logged[:kept] == killed[:kept]


def test_a_checkpoint_saved_before_metrics_bytes_is_cut_back_by_step_numbers(config, tmp_path):
    """last.pt without `metrics_bytes` (saved before this fix), and a line torn by the kill."""
    reference_out, out = tmp_path / "reference", tmp_path / "run"
    train_until(config, reference_out, resume=False)
    train_until(config, out, resume=False, kill_at=9)
    payload = load_checkpoint(out / "last.pt")
    del payload["train_state"]["metrics_bytes"]
    save_checkpoint({k: v for k, v in payload.items() if k not in ("format", "version")}, out / "last.pt")
    with (out / "metrics.jsonl").open("a") as stream:
        stream.write('{"kind": "train", "step": 10, "lo')
    train_until(config, out, resume=True)
    assert entries(out / "metrics.jsonl") == entries(reference_out / "metrics.jsonl")


def test_resuming_without_a_checkpoint_starts_the_log_afresh(config, tmp_path):
    out = tmp_path / "run"
    train_until(config, out, resume=False, kill_at=2)  # killed before the first checkpoint
    assert not (out / "last.pt").exists()
    context = init_distributed()
    try:
        trainer = Trainer(config, out, context)
        assert not trainer.resume()
        trainer.fit()
    finally:
        shutdown(context)
    train_steps = [step for kind, step in entries(out / "metrics.jsonl") if kind == "train"]
    assert train_steps == list(range(1, trainer.state.step + 1))
