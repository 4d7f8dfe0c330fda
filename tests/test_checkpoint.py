"""Checkpoints: atomic save, round trip, and refusal of anything that would run code when loaded."""

from __future__ import annotations

import collections
import os
import pickle

import pytest
import torch

from recog.checkpoint import FORMAT, VERSION, CheckpointError, load_checkpoint, save_checkpoint

MARKER = "recog-test-payload-ran"


class SomeClass:
    """An arbitrary class: unpickling it would mean importing and building objects from the file."""

    def __init__(self) -> None:
        self.value = 1


class SneakyDict(collections.OrderedDict):
    pass


class RunsCode:
    """Unpickling this calls os.system; a safe loader must refuse it without running it."""

    def __init__(self, flag_path: str) -> None:
        self.flag_path = flag_path

    def __reduce__(self):
        return (os.system, (f"echo {MARKER} > {self.flag_path}",))


def test_round_trip_is_atomic_and_keeps_tensors_and_plain_data(tmp_path):
    path = tmp_path / "run" / "model.pt"  # the folder does not exist yet
    payload = {
        "model_state": {"weight": torch.randn(3, 4), "bias": torch.zeros(4, dtype=torch.float16)},
        "vocab": [" ", "a", "b"],
        "config": {"model": {"hidden": 8, "speed": (0.9, 1.1)}, "name": None, "flag": True},
        "step": 12,
    }
    save_checkpoint(payload, path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]  # no temporary files left behind
    loaded = load_checkpoint(path)
    assert loaded["format"] == FORMAT and loaded["version"] == VERSION
    assert torch.equal(loaded["model_state"]["weight"], payload["model_state"]["weight"])
    assert loaded["model_state"]["bias"].dtype == torch.float16
    assert loaded["vocab"] == payload["vocab"] and loaded["step"] == 12
    assert loaded["config"] == payload["config"]

    # saving again replaces the file in one step, still without leftovers
    save_checkpoint({**payload, "step": 13}, path)
    assert load_checkpoint(path)["step"] == 13
    assert sorted(p.name for p in path.parent.iterdir()) == ["model.pt"]


def test_failed_save_leaves_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - torch raises its own pickling error type
        save_checkpoint({"step": 2, "bad": lambda: None}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]
    assert load_checkpoint(path)["step"] == 1


@pytest.mark.parametrize(
    "hostile",
    [SomeClass(), SneakyDict(a=torch.zeros(1))],
    ids=["module-level class", "OrderedDict subclass"],
)
def test_arbitrary_pickled_objects_are_refused(tmp_path, hostile):
    path = tmp_path / "hostile.pt"
    torch.save({"format": FORMAT, "version": VERSION, "x": hostile}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert "refused" in str(error.value)


def test_a_code_running_payload_is_refused_without_running(tmp_path):
    flag = tmp_path / "flag.txt"
    path = tmp_path / "evil.pt"
    torch.save({"format": FORMAT, "version": VERSION, "x": RunsCode(str(flag))}, path)
    with pytest.raises(CheckpointError, match="refused") as error:
        load_checkpoint(path)
    assert str(path) in str(error.value)
    assert not flag.exists()
    # the same bytes through a plain pickle would have run the command: the test payload is real
    with open(path, "rb") as stream:
        torch.load(stream, weights_only=False)
    assert MARKER in flag.read_text()


def test_files_that_are_not_checkpoints_give_clear_errors(tmp_path):
    missing = tmp_path / "missing.pt"
    with pytest.raises(CheckpointError, match="checkpoint not found") as error:
        load_checkpoint(missing)
    assert str(missing) in str(error.value)

    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="not a recog checkpoint") as error:
        load_checkpoint(empty)
    assert str(empty) in str(error.value)

    torn = tmp_path / "torn.pt"
    save_checkpoint({"step": 1}, torn)
    torn.write_bytes(torn.read_bytes()[:100])  # a copy cut short
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(torn)
    assert str(torn) in str(error.value)

    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    with pytest.raises(CheckpointError, match="no 'recog-checkpoint' marker") as error:
        load_checkpoint(foreign)
    assert str(foreign) in str(error.value)

    plain_pickle = tmp_path / "list.pt"
    plain_pickle.write_bytes(pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(plain_pickle)
    assert str(plain_pickle) in str(error.value)


def test_wrong_version_is_named(tmp_path):
    path = tmp_path / "future.pt"
    torch.save({"format": FORMAT, "version": VERSION + 1, "model_state": {}}, path)
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message
    assert f"version {VERSION + 1} is not supported" in message
    assert f"reads {VERSION}" in message


def test_audio_or_text_passed_as_a_checkpoint_gives_a_checkpoint_error(tmp_path):
    import numpy as np
    import soundfile

    wav = tmp_path / "speech.wav"
    soundfile.write(wav, np.zeros(1600, dtype=np.float32), 16000)
    notes = tmp_path / "notes.txt"
    notes.write_text("these are not the weights you are looking for\n")
    hello = tmp_path / "hello.txt"
    hello.write_text("hello\n")
    for path in (wav, notes, hello):
        with pytest.raises(CheckpointError) as error:
            load_checkpoint(path)
        assert str(path) in str(error.value)
