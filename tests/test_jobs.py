"""The job layer under `recog transcribe` and `recog read` (issue 22): nothing lost or destroyed, one
clear error for every bad input. Tiny untrained checkpoints are enough here: these tests are about
which files get which line, and which files are left alone, not about the text.

Commands that could hang or eat memory when a guard regresses run in a subprocess with a timeout and
an address-space limit, so a regression fails instead of stopping the machine."""

from __future__ import annotations

import dataclasses
import io
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from conftest import REPO, subprocess_env
from PIL import Image

from recog.checkpoint import save_checkpoint
from recog.config import DecodeConfig, ModelConfig
from recog.features.speech import CMVN
from recog.modalities import modality_for
from recog.model import CTCModel
from recog.recognizer import Recognizer
from recog.vocab import Vocab

RATE = 16000
MEMORY_LIMIT = 6 << 30  # address space for a subprocess: torch maps ~2 GB, a runaway read hits this


# ---------------------------------------------------------------- tiny checkpoints and inputs
def make_checkpoint(path: Path, task: str, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    vocab, features = Vocab.default(), modality_for(task).features
    model = CTCModel(ModelConfig(hidden=8, layers=1, stack=1), features.dim, len(vocab))
    payload = {
        "task": task,
        "model_state": model.state_dict(),
        "model_config": dataclasses.asdict(model.config),
        "input_dim": features.dim,
        "vocab": vocab.to_list(),
        "features": dataclasses.asdict(features.config),
        "cmvn": CMVN("utterance").state(),
        "decode": dataclasses.asdict(DecodeConfig(lexicon=False)),
    }
    save_checkpoint(payload, path)
    return path


def write_tone(path: Path, seconds: float) -> Path:
    samples = (0.1 * np.sin(np.arange(int(seconds * RATE)) / 7)).astype(np.float32)
    soundfile.write(path, samples, RATE)
    return path


def write_ink(path: Path, points: int) -> Path:
    """A wave of `points` points whose length (and so its number of frames) grows with `points`."""
    t = np.linspace(0, 1, points)
    stroke = np.column_stack([points * t, 10 * np.sin(points * t / 5), t]).tolist()
    path.write_text(json.dumps({"strokes": [stroke]}))
    return path


def write_image(path: Path, width: int) -> Path:
    pixels = np.full((32, width), 255, np.uint8)
    pixels[10:22, 5 : width - 5 : 3] = 0
    Image.fromarray(pixels).save(path)
    return path


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> dict:
    folder = tmp_path_factory.mktemp("jobs")
    kit = {task: make_checkpoint(folder / f"{task}.pt", task) for task in ("speech", "ink", "image")}
    kit["other"] = make_checkpoint(folder / "other.pt", "speech", seed=1)
    (folder / "audio").mkdir()
    kit["audio"] = [write_tone(folder / "audio" / f"t{i}.wav", 0.5 + 0.1 * i) for i in range(4)]
    (folder / "inks").mkdir()
    kit["inks"] = [write_ink(folder / "inks" / f"i{i}.json", 30 + 10 * i) for i in range(4)]
    return kit


def recog(*args: str, capsys) -> tuple[int, str, str]:
    """`recog ARGS` in this process: (exit status, stdout, stderr); argparse's exits included."""
    from recog.cli import main

    try:
        code = main(list(args))
    except SystemExit as exit:
        code = exit.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_limited(*args: str, timeout: float = 90, **kwargs) -> subprocess.CompletedProcess:
    """`recog ARGS` in a subprocess with a wall-clock and an address-space limit."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))

    kwargs.setdefault("capture_output", True)
    return subprocess.run(
        [sys.executable, "-m", "recog.cli", *args],
        cwd=REPO,
        env=subprocess_env(),
        text=True,
        timeout=timeout,
        preexec_fn=limit,
        **kwargs,
    )


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    assert "Traceback" not in err and err.count("\n") == 1, err
    for needle in needles:
        assert needle in err, err


def app_inputs(kit: dict, command: str) -> tuple[Path, list[Path]]:
    return (kit["speech"], kit["audio"]) if command == "transcribe" else (kit["ink"], kit["inks"])


# ---------------------------------------------------------------- data destroyed or lost
def shard_parts(kit, out: Path) -> list[Path]:
    from recog.transcribe import Options, run

    recognizer = Recognizer.load(kit["speech"])
    for rank in range(2):
        run(recognizer, list(map(str, kit["audio"])), Options(output=str(out), shard=(rank, 2), workers=0))
    return sorted(out.parent.glob(f"{out.name}.part*"))


def test_merge_deletes_only_parts_it_verified_never_its_output_nor_a_foreign_file(kit, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    parts = shard_parts(kit, out)
    assert len(parts) == 2
    notes, manifest = tmp_path / "notes.txt", tmp_path / "set.jsonl"
    notes.write_text("my notes\n")
    manifest.write_text(json.dumps({"audio": "a.wav", "text": "hi"}) + "\n")
    kept = {path: path.read_bytes() for path in [*parts, notes, manifest]}
    for stranger in (notes, manifest):  # a file that is not a ledger: refused, nothing deleted
        code, _, err = recog("merge", "-o", str(out), *map(str, parts), str(stranger), capsys=capsys)
        one_line_error(code, err, str(stranger), "not a recog output")
        assert {path: path.read_bytes() for path in kept} == kept and not out.exists()
    # a part of another model: refused
    other = tmp_path / "other.jsonl"
    from recog.transcribe import Options, run

    run(Recognizer.load(kit["other"]), [str(kit["audio"][0])], Options(output=str(other), workers=0))
    code, _, err = recog("merge", "-o", str(out), *map(str, parts), str(other), capsys=capsys)
    one_line_error(code, err, str(other), "another model")
    assert {path: path.read_bytes() for path in kept} == kept and not out.exists()
    # `recog merge -o out.jsonl out.jsonl*`: the output among its parts, a part given twice
    out.write_bytes(b"")
    code, _, err = recog("merge", "-o", str(out), str(out), *map(str, parts), str(parts[0]), capsys=capsys)
    assert code == 0, err
    assert sorted(r["path"] for r in records(out)) == [str(path) for path in kit["audio"]]
    assert not any(path.exists() for path in parts) and notes.exists() and manifest.exists()
    assert not list(tmp_path.glob(".*"))  # no lock or temporary file left


@pytest.mark.parametrize("command", ["transcribe", "read"])
def test_an_output_that_is_not_a_ledger_is_refused_and_left_as_it_is(kit, tmp_path, capsys, command):
    model, inputs = app_inputs(kit, command)
    notes = tmp_path / "notes.txt"
    notes.write_text("a line of my own\nanother\n")
    copy = tmp_path / inputs[0].name  # the input itself as -o
    copy.write_bytes(inputs[0].read_bytes())
    ours = tmp_path / "ours.jsonl"
    code, _, err = recog(
        command, "--model", str(model), str(inputs[0]), "-o", str(ours), "--workers", "0", capsys=capsys
    )
    assert code == 0, err
    garbage = tmp_path / "garbage.jsonl"  # a ledger with a line that is not ours in the middle
    line = ours.read_text()
    garbage.write_text(line + "my own note\n" + line.replace(str(inputs[0]), "x"))
    for target in (notes, copy, garbage):
        before = target.read_bytes()
        args = [command, "--model", str(model), str(copy), *map(str, inputs[1:]), "-o", str(target)]
        code, _, err = recog(*args, "--workers", "0", capsys=capsys)
        one_line_error(code, err, str(target), "not a recog output")
        assert target.read_bytes() == before


def test_resuming_with_another_model_is_refused(kit, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    paths = list(map(str, kit["audio"]))
    code, _, err = recog(
        "transcribe",
        "--model",
        str(kit["speech"]),
        *paths[:2],
        "-o",
        str(out),
        "--workers",
        "0",
        capsys=capsys,
    )
    assert code == 0, err
    before = out.read_bytes()
    code, _, err = recog(
        "transcribe", "--model", str(kit["other"]), *paths, "-o", str(out), "--workers", "0", capsys=capsys
    )
    one_line_error(code, err, str(out), "another model", str(kit["other"]))
    assert out.read_bytes() == before
    # the line names the model that wrote it; the same model resumes
    assert {r["model"] for r in records(out)} == {f"speech:{Recognizer.load(kit['speech']).model_id}"}
    code, _, err = recog(
        "transcribe", "--model", str(kit["speech"]), *paths, "-o", str(out), "--workers", "0", capsys=capsys
    )
    assert code == 0 and "4 files (2 already done" in err, err


@pytest.mark.parametrize(
    "command, kind", [("transcribe", "ink"), ("transcribe", "image"), ("read", "speech")]
)
def test_a_checkpoint_of_the_wrong_kind_is_refused_before_any_line(kit, tmp_path, capsys, command, kind):
    out = tmp_path / "out.jsonl"
    _, inputs = app_inputs(kit, command)
    code, stdout, err = recog(
        command, "--model", str(kit[kind]), *map(str, inputs), "-o", str(out), capsys=capsys
    )
    instead = "recog read" if command == "transcribe" else "recog transcribe"
    one_line_error(code, err, str(kit[kind]), f"{kind} model", instead)
    assert not out.exists() and stdout == ""


HOLDER = """
import sys, time
from pathlib import Path
import recog.transcribe as engine
read, go = engine.BatchReader.__getitem__, Path(sys.argv[1])
def held(self, number):
    while number and not go.exists():  # after the first batch, wait for the test's go
        time.sleep(0.02)
    return read(self, number)
engine.BatchReader.__getitem__ = held
from recog.cli import main
sys.exit(main(sys.argv[2:]))
"""


def test_a_second_writer_on_the_same_output_is_refused(kit, tmp_path, capsys):
    out, go = tmp_path / "out.jsonl", tmp_path / "go"
    first = [str(path) for path in kit["audio"][:2]]
    args = [
        "transcribe",
        "--model",
        str(kit["speech"]),
        "-o",
        str(out),
        "--workers",
        "0",
        "--batch-seconds",
        "0.5",
    ]
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(go), *args, *first], cwd=REPO, env=subprocess_env(),
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not (out.exists() and out.read_bytes().count(b"\n") >= 1):
            assert holder.poll() is None, holder.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.02)
        second = [str(path) for path in kit["audio"][2:]]
        code, _, err = recog(*args, *second, capsys=capsys)
        one_line_error(code, err, f"{out} is being written by another recog process (pid {holder.pid})")
    finally:
        go.touch()
        holder.wait(timeout=120)
    assert holder.returncode == 0, holder.stderr.read()
    assert [r["path"] for r in records(out)] == first
    code, _, err = recog(*args, *second, capsys=capsys)
    assert code == 0, err
    assert sorted(r["path"] for r in records(out)) == sorted(first + second)


# ---------------------------------------------------------------- crashes and hangs
@pytest.mark.parametrize("command", ["transcribe", "read"])
def test_folder_walks_survive_symlink_cycles_and_visit_each_file_once(kit, tmp_path, command):
    model, inputs = app_inputs(kit, command)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    for number, source in enumerate(inputs[:3]):
        target = folder / ("sub" if number == 2 else "") / source.name
        target.write_bytes(source.read_bytes())
    (folder / "loop").symlink_to(".")
    (folder / "again").symlink_to(".")
    (folder / "sub" / "up").symlink_to("..")
    (folder / f"twin{inputs[0].suffix}").symlink_to(inputs[0].name)  # the same file under two names
    result = run_limited(command, "--model", str(model), str(folder), "--workers", "0", timeout=60)
    assert result.returncode == 0, result.stderr[-3000:]
    paths = [json.loads(line)["path"] for line in result.stdout.splitlines()]
    names = [os.path.relpath(path, folder) for path in paths]
    assert sorted(names) == sorted([inputs[0].name, inputs[1].name, f"sub/{inputs[2].name}"]), names


@pytest.mark.parametrize("command", ["transcribe", "read"])
def test_a_fifo_gets_an_error_line_and_blocks_nothing(kit, tmp_path, command):
    model, inputs = app_inputs(kit, command)
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / inputs[0].name).write_bytes(inputs[0].read_bytes())
    os.mkfifo(folder / f"x{inputs[0].suffix}")
    named = tmp_path / f"named{inputs[0].suffix}"
    os.mkfifo(named)
    result = run_limited(
        command, "--model", str(model), str(folder), str(named), "--workers", "0", timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = {json.loads(line)["path"]: json.loads(line) for line in result.stdout.splitlines()}
    assert list(lines) == [str(folder / inputs[0].name), str(folder / f"x{inputs[0].suffix}"), str(named)]
    assert lines[str(folder / inputs[0].name)]["error"] is None
    for path in (folder / f"x{inputs[0].suffix}", named):
        assert lines[str(path)]["error"] == f"{path}: not a regular file (a FIFO)"


class FailsOn(torch.nn.Module):
    """The model, except that a batch holding an input of `length` frames raises MemoryError."""

    def __init__(self, model: torch.nn.Module, length: int):
        super().__init__()
        self.model, self.length, self.config = model, length, model.config
        self.batches: list[int] = []

    def forward(self, frames, lengths):
        self.batches.append(len(lengths))
        if self.length in lengths.tolist():
            raise MemoryError("out of memory")
        return self.model(frames, lengths)


def test_a_failing_batch_falls_back_to_one_file_at_a_time_in_transcribe(kit):
    from recog.audio import read_audio
    from recog.transcribe import Options, run

    recognizer = Recognizer.load(kit["speech"])
    guilty = kit["audio"][2]
    length = recognizer.frames(read_audio(str(guilty))).shape[0]
    recognizer.model = FailsOn(recognizer.model, length)
    stream = io.StringIO()
    summary = run(recognizer, list(map(str, kit["audio"])), Options(workers=0, stream=stream))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["path"] for line in lines] == list(map(str, kit["audio"]))
    assert [line["error"] for line in lines] == [None, None, f"{guilty}: MemoryError: out of memory", None]
    assert recognizer.model.batches[0] == 4 and summary.failed == 1


def test_a_failing_batch_falls_back_to_one_file_at_a_time_in_read_and_decodes_in_one_call(kit):
    from recog.read import ReadOptions, load_input, run

    recognizer = Recognizer.load(kit["ink"])
    guilty = kit["inks"][1]
    length = load_input(recognizer, str(guilty))[0].shape[0]
    stream = io.StringIO()
    decoded = []
    decode = recognizer.decode
    recognizer.decode = lambda log_probs, kind="greedy": (
        decoded.append(len(log_probs)) or decode(log_probs, kind)
    )
    run(recognizer, list(map(str, kit["inks"])), ReadOptions(workers=0, stream=stream))
    assert decoded == [4]  # the whole batch in one decoder call
    first = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert all(line["error"] is None for line in first)

    recognizer.model = FailsOn(recognizer.model, length)
    stream = io.StringIO()
    summary = run(recognizer, list(map(str, kit["inks"])), ReadOptions(workers=0, stream=stream))
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [line["path"] for line in lines] == list(map(str, kit["inks"]))
    assert [line["error"] for line in lines] == [None, f"{guilty}: MemoryError: out of memory", None, None]
    assert [line["text"] for line in lines] != [None] * 4
    assert summary.failed == 1 and recognizer.model.batches[0] == 4


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/full"])
def test_an_output_that_is_a_device_is_refused_without_reading_it(kit, device):
    result = run_limited(
        "transcribe", "--model", str(kit["speech"]), str(kit["audio"][0]), "-o", device, timeout=60
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert f"{device}: not a regular file (a character device)" in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr


@pytest.mark.parametrize("command", ["transcribe", "read"])
def test_a_full_disk_on_stdout_is_one_line_and_a_failure(kit, command):
    model, inputs = app_inputs(kit, command)
    with open("/dev/full", "w") as full:
        result = run_limited(
            command,
            "--model",
            str(model),
            str(inputs[0]),
            "--workers",
            "0",
            stdout=full,
            stderr=subprocess.PIPE,
            capture_output=False,
            timeout=60,
        )
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1 and "No space left on device" in result.stderr, result.stderr


BAD_OPTIONS = [
    (["--chunk-seconds", "0"], "--chunk-seconds"),
    (["--batch-seconds", "0"], "--batch-seconds"),
    (["--workers", "-1"], "--workers"),
    (["--device", "cuda"], "--device"),
    (["--device", "tpu"], "--device"),
    (["--lm", "/etc/passwd"], "--lm"),
    (["--lm", "BINARY"], "--lm"),
    (["--beam", "-1"], "--beam"),
    (["--beam", "0"], "--beam"),
    (["-o", "FOLDER"], "-o"),
    (["-o", "UNDER_A_FILE"], "-o"),
    (["--shard", "2/2"], "--shard"),
]
READ_ONLY_OPTIONS = [(["--batch-size", "0"], "--batch-size")]


@pytest.mark.parametrize(
    "command, extra, option",
    [("transcribe", *case) for case in BAD_OPTIONS]
    + [("read", *case) for case in BAD_OPTIONS if case[1] not in ("--chunk-seconds", "--batch-seconds")]
    + [("read", *case) for case in READ_ONLY_OPTIONS],
)
def test_a_bad_option_value_is_one_line_before_any_work(
    kit, tmp_path, capsys, monkeypatch, command, extra, option
):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    binary = tmp_path / "binary.lm"
    binary.write_bytes(bytes(range(256)) * 40)
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("x")
    values = {
        "BINARY": str(binary),
        "FOLDER": str(tmp_path / "folder"),
        "UNDER_A_FILE": str(tmp_path / "file" / "o.jsonl"),
    }
    extra = [values.get(value, value) for value in extra]
    model, inputs = app_inputs(kit, command)
    workers = [] if option == "--workers" else ["--workers", "0"]
    code, stdout, err = recog(command, "--model", str(model), str(inputs[0]), *extra, *workers, capsys=capsys)
    one_line_error(code, err, option)
    assert stdout == "" and err.startswith("recog")


# ---------------------------------------------------------------- read: shards and torchrun
def test_read_shards_and_merges(kit, tmp_path, capsys):
    out = tmp_path / "out.jsonl"
    paths = list(map(str, kit["inks"]))
    for rank in range(2):
        code, _, err = recog(
            "read",
            "--model",
            str(kit["ink"]),
            *paths,
            "-o",
            str(out),
            "--shard",
            f"{rank}/2",
            "--workers",
            "0",
            capsys=capsys,
        )
        assert code == 0 and "2 files (0 already done" in err, err
    parts = sorted(tmp_path.glob("out.jsonl.part*"))
    assert len(parts) == 2 and not out.exists()
    code, _, err = recog("merge", "-o", str(out), *map(str, parts), capsys=capsys)
    assert code == 0, err
    assert sorted(r["path"] for r in records(out)) == paths and not list(tmp_path.glob("out.jsonl.part*"))


def test_two_torchrun_processes_share_the_files_to_read(kit, tmp_path):
    folder = tmp_path / "inks"
    folder.mkdir()
    for number in range(5):
        (folder / f"line-{number}.json").write_bytes(kit["inks"][number % 4].read_bytes())
    (folder / "line-5.json").write_text("{broken")
    out = tmp_path / "out.jsonl"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
        "-m", "recog.cli", "read", "--model", str(kit["ink"]), str(folder), "-o", str(out), "--workers", "0",
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
    lines = records(out)
    assert [line["path"] for line in lines] == [str(folder / f"line-{i}.json") for i in range(6)]
    assert [line["error"] is None for line in lines] == [True] * 5 + [False]
    assert not list(tmp_path.glob("out.jsonl.part*")) and not list(tmp_path.glob(".*"))
