"""Checkpoint -> features -> model -> decoder: the one code path every CLI and evaluation uses, for
speech (waveforms), ink (`Ink` pen strokes) and line images (ink maps) alike."""

from __future__ import annotations

import dataclasses
import hashlib
import math
import warnings
from pathlib import Path

import numpy as np
import torch

from recog.checkpoint import CheckpointError, load_checkpoint
from recog.config import DecodeConfig, ModelConfig, config_from_dict
from recog.datasets.manifest import Utterance
from recog.decode.base import Decoder
from recog.decode.greedy import GreedyDecoder
from recog.decode.transcript import FileTranscript, Transcript
from recog.features.cmvn import CMVN
from recog.jobs.checks import file_sha256
from recog.metrics import ErrorRate
from recog.modalities import MODALITIES, Modality, modality_for
from recog.model import CTCModel
from recog.text import TextConfig
from recog.vocab import Vocab


class Recognizer:
    """A trained model ready to decode; `load` reads a checkpoint without executing code.

    A Recognizer is a model, a modality (its reader, front end and where output frames are in the input)
    and decoders. Inputs are what the modality's reader gives: float waveforms (speech), `Ink` (ink),
    ink maps (image). For handwriting, word "times" count output frames (`frame_seconds` is 1)."""

    def __init__(
        self,
        model: CTCModel,
        vocab: Vocab,
        modality: Modality,
        cmvn: CMVN,
        decode: DecodeConfig,
        language_model: dict | None = None,
        device: str = "cpu",
    ):
        self.model, self.vocab, self.modality, self.cmvn = model.eval().to(device), vocab, modality, cmvn
        self.decode_config, self.language_model, self.device = decode, language_model, device
        self.frame_seconds = modality.frame_seconds(model.config.stack)
        self.text: TextConfig | None = None  # how references are normalised (None: as they are)
        self._hotwords: dict[str, float] = {}  # phrase -> bonus for this session's beam search
        self._nbest = 1
        self._decoders: dict[str, object] = {}
        self._checkpoint_lm: tuple | None = None  # (NGramLM | None, lexicon words | None), parsed once
        self.checkpoint: str | None = None  # the file it was loaded from
        self._model_id: str | None = None

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Recognizer:
        payload = load_checkpoint(path)
        task = payload.get("task", "speech")
        if task not in MODALITIES:
            raise CheckpointError(f"{path}: checkpoint of an unknown task {task!r}")
        try:
            vocab = Vocab(payload["vocab"])
            modality = modality_for(task, payload["features"])
            model = CTCModel(
                config_from_dict(ModelConfig, payload["model_config"]), payload["input_dim"], len(vocab)
            )
            model.load_state_dict(payload["model_state"])
            decode = config_from_dict(DecodeConfig, cls._decode_settings(payload.get("decode", {}), path))
            cmvn = CMVN.from_state(payload["cmvn"])
        except (KeyError, TypeError, ValueError, RuntimeError) as error:
            raise CheckpointError(
                f"{path}: checkpoint is incomplete or from an incompatible version ({error})"
            ) from None
        recognizer = cls(model, vocab, modality, cmvn, decode, payload.get("language_model"), device)
        recognizer.text = TextConfig.from_state(payload.get("text"))
        recognizer.checkpoint = str(path)
        recognizer._model_id = file_sha256(path)[:16]
        return recognizer

    @staticmethod
    def _decode_settings(stored: dict, path: str | Path) -> dict:
        """A checkpoint's decode settings for recog's decoder. Checkpoints that name engine "flashlight"
        (the removed torchaudio decoder), or name no engine but carry its pruning (`beam_size_token`: from
        before recog had its own decoder), were tuned on flashlight's log10 LM scale: their lm_weight is
        divided by ln 10 (the same fusion on recog's natural-log scale), their flashlight pruning
        dropped, and a warning says to re-tune. Checkpoints from after the engine was removed name none."""
        stored = dict(stored)
        engine = stored.pop("engine", "flashlight" if "beam_size_token" in stored else "recog")
        if engine not in ("recog", "flashlight"):
            raise ValueError(f"unknown decoding engine {engine!r}")
        for name in ("beam_size_token", "beam_threshold"):  # flashlight's pruning
            stored.pop(name, None)
        if engine == "flashlight":
            old = float(stored.get("lm_weight", DecodeConfig.lm_weight))
            stored["lm_weight"] = old / math.log(10)
            warnings.warn(
                f"{path}: its beam search weights were tuned for the flashlight decoder, which recog no "
                f"longer has; decoding with recog's own, lm_weight {old:g} -> {stored['lm_weight']:.4g} "
                f"(log10 -> natural log). Re-tune them: recog lm tune --model {path} DEV.jsonl",
                UserWarning,
                stacklevel=3,
            )
        return stored

    @property
    def task(self) -> str:
        """The modality's name as checkpoints and output lines write it: speech | ink | image."""
        return self.modality.name

    @property
    def features(self):
        return self.modality.features

    @property
    def model_id(self) -> str:
        """16 hex digits naming the model in output lines: of the checkpoint file's sha256, or (a model
        built in memory) of its task, vocabulary and weights."""
        if self._model_id is None:
            digest = hashlib.sha256(f"{self.task}\n{''.join(self.vocab.chars)}".encode())
            for name, tensor in sorted(self.model.state_dict().items()):
                digest.update(name.encode())
                digest.update(
                    tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
                )
            self._model_id = digest.hexdigest()[:16]
        return self._model_id

    def decoder(self, kind: str = "greedy") -> Decoder:
        """The greedy or the beam decoder (recog's, with the checkpoint's LM and lexicon), made once."""
        if kind not in self._decoders:
            if kind == "greedy":
                self._decoders[kind] = GreedyDecoder(self.vocab, self.frame_seconds)
            elif kind == "beam":
                if self._checkpoint_lm is None:
                    from recog.decode.ctc import checkpoint_language_model

                    self._checkpoint_lm = checkpoint_language_model(self.language_model)
                self._decoders[kind] = self._recog_beam(*self._checkpoint_lm)
            else:
                raise ValueError(f"unknown decoder {kind!r}: expected greedy or beam")
        return self._decoders[kind]

    def _recog_beam(self, lm, words: list[str] | None):
        """recog's beam decoder with this config's weights and pruning, its kernels compiled (or loaded
        from numba's cache) by one tiny decode here: `transcribe` and `read` build the decoder before
        their workers fork, so no worker compiles again."""
        from recog.decode.ctc import CTCBeamDecoder

        config = self.decode_config
        decoder = CTCBeamDecoder(
            self.vocab,
            lm,
            words if config.lexicon else None,
            beam=config.beam,
            lm_weight=config.lm_weight,
            word_score=config.word_score,
            unk_score=config.unk_score,
            token_min_logp=config.token_min_logp,
            blank_skip_threshold=config.blank_skip_threshold,
            beam_prune=config.beam_prune,
            frame_seconds=self.frame_seconds,
            hotwords=self._hotwords,
            nbest=self._nbest,
        )
        decoder(np.full((2, len(self.vocab)), -math.log(len(self.vocab)), np.float32))  # (time, vocab)
        return decoder

    def frames(self, sample) -> torch.Tensor:
        """(time, feat) normalised feature frames of one input (no model: safe in worker processes)."""
        return self.cmvn(self.modality.frames(sample))

    def stored_input(self, stored):
        """An input as the datasets keep it in memory (int16 audio, ink/png bytes) -> the reader's output."""
        return self.modality.restore(stored)

    @torch.inference_mode()
    def forward(self, frames: list[torch.Tensor], precision: str = "fp32") -> list[torch.Tensor]:
        """One padded batch through the model: per input (time', vocab) log-probs on the CPU.

        `precision` "bf16" (or "fp16" on CUDA) runs under autocast, as training does."""
        lengths = torch.tensor([f.shape[0] for f in frames])
        padded = torch.nn.utils.rnn.pad_sequence(frames, batch_first=True).to(
            self.device
        )  # (batch, time, feat)
        kind = torch.device(self.device).type
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        with torch.autocast(kind, dtype=dtype or torch.bfloat16, enabled=dtype is not None):
            log_probs, out_lengths = self.model(padded, lengths.to(self.device))
        return [log_probs[row, : int(out_lengths[row])].float().cpu() for row in range(len(frames))]

    @torch.inference_mode()
    def log_probs(self, inputs: list, batch_frames: int = 60000) -> list[torch.Tensor]:
        """Per input (waveform, ink, ink map) (time', vocab) log-probs, computed in length-sorted batches."""
        frames = [self.frames(sample) for sample in inputs]
        order = sorted(range(len(frames)), key=lambda i: frames[i].shape[0])
        results: list[torch.Tensor | None] = [None] * len(frames)
        start = 0
        while start < len(order):
            end = start + 1
            while end < len(order) and frames[order[end]].shape[0] * (end - start + 1) <= batch_frames:
                end += 1
            batch = order[start:end]
            for index, log_probs in zip(batch, self.forward([frames[i] for i in batch]), strict=True):
                results[index] = log_probs
            start = end
        return results

    def decode(self, log_probs: list[torch.Tensor], kind: str = "greedy") -> list[Transcript]:
        """One decoder call for the whole list, padded (recog's beam search runs a batch in one compiled
        call); one Transcript per item, in order."""
        if not log_probs:
            return []
        lengths = torch.tensor([item.shape[0] for item in log_probs])
        padded = torch.nn.utils.rnn.pad_sequence(list(log_probs), batch_first=True)
        return self.decoder(kind)(padded, lengths)

    def configure_beam(
        self,
        beam: int | None = None,
        lm: str | None = None,
        hotwords: dict[str, float] | None = None,
        nbest: int | None = None,
    ) -> None:
        """Decoding overrides for this session: the beam width; another word LM (an ARPA or a
        `recog lm build` file; its words join the checkpoint's lexicon) or "none" for lexicon-only beam
        search; hotwords (phrase -> bonus in natural log, added each time the phrase is recognised);
        `nbest` texts per input (each Transcript's `alternatives`, best first)."""
        if beam is not None:
            if beam < 1:
                raise ValueError(f"beam width must be at least 1, got {beam}")
            self.decode_config = dataclasses.replace(self.decode_config, beam=beam)
        if nbest is not None:
            if not 1 <= nbest <= self.decode_config.beam:
                raise ValueError(
                    f"nbest must be between 1 and the beam width {self.decode_config.beam}, got {nbest}"
                )
            self._nbest = nbest
        if hotwords is not None:
            unknown = {char for phrase in hotwords for char in self.vocab.unknown_chars(phrase)}
            if unknown:
                raise ValueError(
                    f"hotwords have characters this model cannot write: {''.join(sorted(unknown))!r}"
                )
            self._hotwords = dict(hotwords)
        self._decoders.pop("beam", None)
        if lm is None:
            return
        lexicon = (self.language_model or {}).get("lexicon", "")
        words = {line.split("\t")[0] for line in lexicon.splitlines() if line.strip()}
        arpa = None
        if lm != "none":
            arpa = Path(lm)
            if not arpa.is_file():
                raise FileNotFoundError(f"{arpa}: language model not found")
        from recog.decode.lm import BOS, EOS, UNK, NGramLM

        model = NGramLM.load(arpa) if arpa else None
        if model is not None and model.unit == "word":
            words |= {unit for unit in model.units if unit not in (BOS, EOS, UNK)}
        self._decoders["beam"] = self._recog_beam(model, sorted(words) or None)

    def transcribe(self, paths: list[str], output: str | None = None, **options) -> list[FileTranscript]:
        """Transcribe files, folders, list files or manifests: one FileTranscript per audio file found,
        in input order (failed files carry `error`). The engine behind `recog transcribe`; `options` are
        those of `recog.transcribe.Options` (decoder="beam", workers=2, formats=("srt",), ...)."""
        from recog.transcribe import Options, run

        return run(self, paths, Options(output=output, collect=True, **options)).transcripts

    def tune_beam(
        self,
        utterances: list[Utterance],
        stored: dict,
        lm_weights: tuple[float, ...] = (0.5, 1.0, 2.0),
        word_scores: tuple[float, ...] = (-1.0, 0.5, 2.0),
        unk_scores: tuple[float, ...] = (),
    ) -> dict:
        """Grid-search the LM weight, word insertion score and (given `unk_scores`; none: keep it) the
        unknown-word score on a (dev) set by WER, then CER (`recog.decode.tuning.tune`); keeps the best.
        Returns {"best", "grid"}."""
        from recog.decode.tuning import WEIGHTS, tune

        log_probs = self.log_probs([self.stored_input(stored[u.key]) for u in utterances])
        references = [u.text for u in utterances]
        result = tune(self.decoder("beam"), log_probs, references, lm_weights, word_scores, unk_scores)
        best = {name: result["best"][name] for name in WEIGHTS}
        self.decode_config = dataclasses.replace(self.decode_config, **best)
        return result

    def evaluate(
        self,
        utterances: list[Utterance],
        stored: dict,
        kinds=("greedy", "beam"),
        group_by: str | None = None,
    ) -> dict:
        """WER/CER per decoder, overall and per group (voice, style, font: `group_by` names manifest
        fields, comma separated, the first present wins), with a few examples."""
        fields = [name.strip() for name in (group_by or self.modality.group_by).split(",") if name.strip()]
        log_probs = self.log_probs([self.stored_input(stored[u.key]) for u in utterances])
        report = {}
        for kind in kinds:
            if kind == "beam" and not self.language_model and self.decode_config.lexicon:
                continue
            hypotheses = self.decode(log_probs, kind)
            overall, groups = ErrorRate(), {}
            for utterance, hypothesis in zip(utterances, hypotheses, strict=True):
                overall.add(utterance.text, hypothesis.text)
                group = str(next((utterance.info[f] for f in fields if f in utterance.info), "all"))
                groups.setdefault(group, ErrorRate()).add(utterance.text, hypothesis.text)
            report[kind] = {
                **overall.as_dict(),
                "groups": {name: rate.as_dict() for name, rate in sorted(groups.items())},
                "examples": [
                    {"key": u.key, "ref": u.text, "hyp": h.text}
                    for u, h in list(zip(utterances, hypotheses, strict=True))[:4]
                ],
            }
        return report

    def use_onnx(self, path: str | Path | None = None) -> None:
        """Run the encoder with onnxruntime (fp32, CPU) instead of PyTorch: from `path` (a `recog export`
        of this model, checked), else from a per-user cache, exported there when missing."""
        from recog.export import encoder_for

        self.model_id  # noqa: B018 (named from the PyTorch weights while they are here)
        self.model = encoder_for(self, path)
