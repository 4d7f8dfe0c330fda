"""The encoder as ONNX (`recog export`), and `OnnxEncoder`, which runs such a file with onnxruntime in
place of the PyTorch model (`recog transcribe --engine onnx`).

The exported graph is not a trace of `CTCModel.forward`: torch.onnx's exporter turns its row-pick
reversal (`_ReverseRows`) and frame stacking into reshapes with the example's sizes baked in, which
fail or give wrong shapes on other batches. `_Exportable` computes the same function from the same
modules with plain ops (a gather for the reversal within each length, so the backward direction of
every row starts at that row's own end), and every export is checked against the PyTorch model on
padded batches of mixed lengths before it is kept. The graph runs in fp32.

The file carries what pairs it with its checkpoint in its metadata (task, vocabulary, model id, model
config, input size): a file from another model is refused with one line, never run."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from recog.checkpoint import CheckpointError
from recog.config import ModelConfig, config_from_dict

FORMAT = "recog-ctc-encoder/1"  # bump when the graph's inputs, outputs or metadata change
TOLERANCE = 1e-4  # largest difference in log-probs from the PyTorch model an export may have
MAX_ONNX_BYTES = 2**31 - 1  # protobuf's limit for one file; larger models would need external data


class ExportError(CheckpointError):
    """An ONNX file that is not a recog export, or not of this checkpoint; the message names the file."""


def _reverse_within_length(sequences: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """`recog.model.reverse_within_length` with a gather, which ONNX has for any batch and time."""
    steps = torch.arange(sequences.shape[1]).unsqueeze(0)  # (1, time)
    ends = lengths.unsqueeze(1)  # (batch, 1)
    index = torch.where(steps < ends, ends - 1 - steps, steps)  # (batch, time)
    return torch.gather(sequences, 1, index.unsqueeze(-1).expand(-1, -1, sequences.shape[2]))


class _Exportable(nn.Module):
    """CTCModel's forward in inference, written with ops the exporter keeps dynamic."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, frames: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        model, stack = self.model, self.model.config.stack
        if model.front is not None:
            frames = model.front(frames, lengths)  # (batch, time, channels * feat')
        batch, time, feat = frames.shape
        steps = time // stack
        hidden = frames[:, : steps * stack].reshape(batch, steps, feat * stack)  # (batch, time', feat')
        lengths = torch.div(lengths, stack, rounding_mode="floor")
        for layer in model.layers:
            forward_out, _ = layer.forward_rnn(hidden)
            backward_out, _ = layer.backward_rnn(_reverse_within_length(hidden, lengths))
            hidden = torch.cat([forward_out, _reverse_within_length(backward_out, lengths)], dim=-1)
        return model.head(hidden).float().log_softmax(dim=-1), lengths  # (batch, time', vocab)


def _metadata(recognizer) -> dict[str, str]:
    model = recognizer.model
    return {
        "recog.task": recognizer.task,
        "recog.model_id": recognizer.model_id,
        "recog.vocab": json.dumps(recognizer.vocab.chars, ensure_ascii=False),
        "recog.model_config": json.dumps(dataclasses.asdict(model.config)),
        "recog.input_dim": str(model.input_dim),
        "recog.checkpoint": Path(recognizer.checkpoint).name if recognizer.checkpoint else "",
    }


def _example(
    input_dim: int, stack: int, batch: int, time: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    frames = torch.randn(batch, time, input_dim, generator=generator)  # (batch, time, feat)
    lengths = torch.randint(stack, time + 1, (batch,), generator=generator)
    lengths[0] = time  # one row fills the batch, the others are padded
    return frames, lengths


def export_onnx(recognizer, out: str | Path) -> Path:
    """Write `recognizer`'s encoder to `out` as ONNX (dynamic batch and time), checked against PyTorch,
    with the metadata that pairs it with the checkpoint."""
    if torch.device(recognizer.device).type != "cpu":
        raise ExportError(f"{out}: export from a model on the CPU (this one is on {recognizer.device})")
    return export_model(recognizer.model, out, _metadata(recognizer))


def export_model(model: nn.Module, out: str | Path, metadata: dict[str, str]) -> Path:
    """A CPU CTCModel to `out` as ONNX with `metadata`, after checking the graph against the model.
    `out` may replace only an earlier recog export; it appears complete or not at all."""
    out = Path(out)
    if out.exists() and not _is_recog_export(out):
        raise ExportError(f"{out}: exists and is not a recog ONNX export; not overwriting it")
    try:
        import onnxscript  # noqa: F401  (torch.onnx's exporter needs it; transcription needs neither)
    except ImportError:
        raise ExportError(
            f"{out}: exporting needs onnx and onnxscript (pip install -r requirements.txt)"
        ) from None
    model = model.eval()
    stack = model.config.stack
    example = _example(model.input_dim, stack, 2, 4 * stack + (1 if stack > 1 else 0), seed=0)
    batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
    quiet = logging.getLogger("torch.onnx")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                _Exportable(model),
                example,
                dynamo=True,
                input_names=["frames", "lengths"],
                output_names=["log_probs", "out_lengths"],
                dynamic_shapes={"frames": {0: batch, 1: time}, "lengths": {0: batch}},
            )
            graph = program.model_proto
    finally:
        quiet.setLevel(level)
    for value in graph.graph.input:  # the exporter falls back to fixed sizes where it cannot keep them
        fixed = [dim.dim_value for dim in value.type.tensor_type.shape.dim[:2] if dim.HasField("dim_value")]
        if fixed:
            raise ExportError(
                f"{out}: torch.onnx could not keep the batch and time axes of {value.name!r} dynamic for "
                f"cell {model.config.cell!r} (it fixed them at the example's size); lstm and gru models export"
            )
    # The exporter's inner shape annotations may carry the example's sizes; they are hints only.
    del graph.graph.value_info[:]
    for output, names in zip(graph.graph.output, (("batch", "time_out"), ("batch",)), strict=True):
        for dim, name in zip(output.type.tensor_type.shape.dim, names, strict=False):
            dim.dim_param = name  # replaces a fixed dim_value (a oneof)
    for key, value in {"recog.format": FORMAT, **metadata}.items():
        graph.metadata_props.add(key=key, value=value)
    data = graph.SerializeToString()
    if len(data) > MAX_ONNX_BYTES:
        raise ExportError(f"{out}: the model is over 2 GB, more than one ONNX file holds")
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, partial = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        _check_against_torch(model, partial, out)
        os.replace(partial, out)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return out


def _check_against_torch(model: nn.Module, path: str, out: Path) -> None:
    """The ONNX graph's log-probs and lengths against the PyTorch model's on padded batches of mixed
    lengths: time not a multiple of the stacking, a multiple, one row, many rows."""
    stack = model.config.stack
    encoder = OnnxEncoder(path, model.config, threads=1)
    worst = 0.0
    for seed, (batch, time) in enumerate([(3, 7 * stack + stack - 1), (1, 5 * stack), (5, 11 * stack + 1)]):
        frames, lengths = _example(model.input_dim, stack, batch, time, seed=seed + 1)
        with torch.inference_mode():
            expected, expected_lengths = model(frames, lengths)
        log_probs, out_lengths = encoder(frames, lengths)
        if not torch.equal(out_lengths, expected_lengths) or log_probs.shape != expected.shape:
            raise ExportError(f"{out}: the exported graph gives other output lengths than PyTorch")
        worst = max(worst, float((log_probs - expected).abs().max()))
    if worst > TOLERANCE:
        raise ExportError(f"{out}: exported log-probs differ from PyTorch's by {worst:.2e} (> {TOLERANCE})")


def _read_metadata(path: Path) -> dict[str, str]:
    """The custom metadata of an ONNX file, via onnxruntime (one single-threaded session)."""
    import onnxruntime

    if not path.is_file():
        raise ExportError(f"{path}: ONNX file not found")
    try:
        session = onnxruntime.InferenceSession(
            str(path), _session_options(1), providers=["CPUExecutionProvider"]
        )
    except Exception as error:  # onnxruntime raises its own types for every kind of bad file
        reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise ExportError(f"{path}: not an ONNX file ({reason})") from None
    return dict(session.get_modelmeta().custom_metadata_map)


def _is_recog_export(path: Path) -> bool:
    try:
        return _read_metadata(path).get("recog.format", "").startswith("recog-ctc-encoder/")
    except ExportError:
        return False


def _session_options(threads: int):
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.log_severity_level = 3  # errors only: no shape warnings on stderr
    return options


class OnnxEncoder:
    """An exported encoder, called like CTCModel: `(padded (batch, time, feat), lengths) -> (log_probs
    (batch, time', vocab), out_lengths)`, computed by onnxruntime on numpy arrays (fp32; autocast does
    not apply). One session per process, made at its first call: forked transcription workers each
    make their own, with as many intra-op threads as torch has there (1 in a worker)."""

    def __init__(self, path: str | Path, config: ModelConfig, threads: int | None = None):
        self.path, self.config, self.threads = str(path), config, threads
        self._sessions: dict[int, object] = {}  # pid -> session; a parent's is never closed in a child

    @classmethod
    def for_recognizer(cls, recognizer, path: str | Path) -> OnnxEncoder:
        """The encoder in `path` after checking that it was exported from `recognizer`'s model."""
        path = Path(path)
        metadata = _read_metadata(path)
        if metadata.get("recog.format") != FORMAT:
            found = metadata.get("recog.format")
            raise ExportError(
                f"{path}: not a recog export (format {found!r}, expected {FORMAT!r}): run recog export"
            )
        expected = {"recog.format": FORMAT, **_metadata(recognizer)}
        for key, what in (("recog.task", "task"), ("recog.vocab", "vocabulary"), ("recog.model_id", "model")):
            if metadata.get(key) != expected[key]:
                raise ExportError(
                    f"{path}: exported from another model ({what} {metadata.get(key)!r}, the checkpoint's "
                    f"{expected[key]!r}): export it again from this checkpoint"
                )
        config = config_from_dict(ModelConfig, json.loads(metadata["recog.model_config"]))
        return cls(path, config)

    def _session(self):
        pid = os.getpid()
        if pid not in self._sessions:
            import onnxruntime

            threads = self.threads or torch.get_num_threads()
            self._sessions[pid] = onnxruntime.InferenceSession(
                self.path, _session_options(threads), providers=["CPUExecutionProvider"]
            )
        return self._sessions[pid]

    def __call__(self, padded: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        frames = np.ascontiguousarray(padded.detach().cpu().numpy(), dtype=np.float32)  # (batch, time, feat)
        steps = np.asarray(lengths.detach().cpu().numpy(), dtype=np.int64)
        if frames.shape[1] // self.config.stack == 0:  # no output frame for any row: nothing to run
            vocab = self._session().get_outputs()[0].shape[2]
            return torch.zeros(frames.shape[0], 0, vocab), torch.from_numpy(steps // self.config.stack)
        log_probs, out_lengths = self._session().run(None, {"frames": frames, "lengths": steps})
        return torch.from_numpy(log_probs), torch.from_numpy(out_lengths)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_sessions": {}}  # sessions do not pickle; the next call makes one

    def eval(self) -> OnnxEncoder:
        return self

    def to(self, device) -> OnnxEncoder:
        if torch.device(device).type != "cpu":
            raise ExportError(f"{self.path}: the ONNX engine runs on the CPU, not {device}")
        return self


def cache_path(recognizer) -> Path:
    """Where `--engine onnx` keeps the export of a checkpoint: a per-user cache, named by model id."""
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "recog" / "onnx"
    return root / f"{recognizer.task}-{recognizer.model_id}.onnx"


def encoder_for(recognizer, path: str | Path | None = None) -> OnnxEncoder:
    """The ONNX encoder of `recognizer`: from `path` (checked), else from the cache, exported there
    first when missing or unusable (the cache holds only files recog wrote)."""
    if torch.device(recognizer.device).type != "cpu":
        raise ExportError(f"{path or 'onnx'}: the ONNX engine runs on the CPU, not {recognizer.device}")
    if path is not None:
        return OnnxEncoder.for_recognizer(recognizer, path)
    cached = cache_path(recognizer)
    if cached.exists():
        try:
            return OnnxEncoder.for_recognizer(recognizer, cached)
        except ExportError:
            pass  # an export of another format version: replaced below (export_onnx checks it is ours)
    export_onnx(recognizer, cached)
    return OnnxEncoder.for_recognizer(recognizer, cached)


def export_checkpoint(checkpoint: str | Path, out: str | Path) -> Path:
    """`recog export`: a checkpoint's encoder to `out` (the checkpoint is only read)."""
    from recog.recognizer import Recognizer

    recognizer = Recognizer.load(checkpoint, "cpu")
    if Path(out).resolve() == Path(checkpoint).resolve():
        raise ExportError(f"{out}: is the checkpoint itself; choose another output")
    return export_onnx(recognizer, out)


def onnx_settings(device: str, precision: str) -> tuple[str, str]:
    """(device, precision) for the ONNX engine: the CPU and fp32 (auto picks them); a GPU or bf16/fp16
    asked for by name is refused before any work."""
    if device not in ("auto", "cpu"):
        raise ExportError(f"--engine onnx: runs on the CPU (onnxruntime CPU build), not --device {device}")
    if precision not in ("auto", "fp32"):
        raise ExportError(f"--engine onnx: the exported graph runs fp32, not --precision {precision}")
    return "cpu", "fp32"
