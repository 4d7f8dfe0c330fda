"""The training loop: DDP, AMP, gradient clipping, warmup + cosine schedule, early stopping,
atomic checkpoints, exact resume (optimizer, schedule, sampler position, RNG)."""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from recog.checkpoint import load_checkpoint, save_checkpoint
from recog.config import Config, TrainConfig, config_to_dict
from recog.datasets.batching import BucketBatchSampler, collate, oversample_factors
from recog.datasets.dataset import RecognitionDataset, worker_init
from recog.datasets.sets import prepare_corpus, prepare_sets, training_vocab
from recog.decode.lexicon import prepare_language_model
from recog.distributed import Context, init_distributed, shutdown
from recog.modalities import from_config
from recog.model import CTCModel
from recog.precision import training_autocast_bf16
from recog.recognizer import Recognizer
from recog.report import format_examples, format_table, plot_curves
from recog.vocab import Vocab


@dataclass
class TrainState:
    step: int = 0
    elapsed: float = 0.0  # seconds of training, summed over resumed runs
    best_cer: float = math.inf
    best_step: int = 0
    evals_without_gain: int = 0
    blank_evals: int = 0
    skipped_batches: int = 0
    infeasible_samples: int = 0
    last_eval_step: int = -1  # kept on every rank (best_* is only updated on rank 0)
    finished: bool = False


class WeightAverage:
    """An exponential moving average of a model's floating-point weights, kept in fp32.

    The decay ramps up as min(decay, (1 + step) / (10 + step)), so the average is not dominated by the
    random initial weights early in training."""

    def __init__(self, model: nn.Module, decay: float):
        if not 0.0 < decay < 1.0:
            raise ValueError(f"train.ema_decay must lie in (0, 1), got {decay}")
        self.decay = decay
        self.shadow = {
            name: value.detach().float().clone()
            for name, value in model.state_dict().items()
            if value.is_floating_point()
        }

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1.0 + step) / (10.0 + step))
        state = model.state_dict()
        names = list(self.shadow)
        torch._foreach_lerp_([self.shadow[n] for n in names], [state[n].float() for n in names], 1.0 - decay)

    def load(self, state: dict) -> None:
        for name in self.shadow:
            self.shadow[name].copy_(state[name])

    @contextlib.contextmanager
    def applied(self, model: nn.Module):
        """Run the block with the averaged weights in `model`, then put the raw weights back."""
        state = model.state_dict()
        raw = {name: state[name].detach().clone() for name in self.shadow}
        with torch.no_grad():
            for name, value in self.shadow.items():
                state[name].copy_(value)
        try:
            yield model
        finally:
            with torch.no_grad():
                for name, value in raw.items():
                    state[name].copy_(value)


def learning_rate(config: TrainConfig, state: TrainState, total_steps: int) -> float:
    """Linear warmup, then cosine decay following the step count or the clock, whichever is further."""
    warmup = min(1.0, (state.step + 1) / max(1, config.warmup_steps))
    progress = state.step / max(1, total_steps)
    if config.max_minutes > 0:
        progress = max(progress, state.elapsed / (60.0 * config.max_minutes))
    progress = min(1.0, progress)
    decay = config.final_lr_ratio + (1 - config.final_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return config.lr * warmup * decay


def model_payload(model: nn.Module, config: Config, vocab: Vocab, features, cmvn, lm: dict | None) -> dict:
    """Everything inference needs, as tensors and plain data."""
    return {
        "task": config.task,
        # copies: on the CPU .cpu() would alias the live weights, which training (or a swapped-in moving
        # average being swapped out) goes on changing
        "model_state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
        "model_config": asdict(config.model),
        "input_dim": features.dim,
        "vocab": vocab.to_list(),
        "features": asdict(features.config),
        "cmvn": cmvn.state(),
        "text": config.text.state(),
        "decode": asdict(config.decode),
        "language_model": lm,
        "config": config_to_dict(config),
    }


class Trainer:
    def __init__(self, config: Config, out_dir: Path, context: Context):
        self.config, self.out_dir, self.context = config, out_dir, context
        self.metrics_path = out_dir / "metrics.jsonl"
        self.vocab = training_vocab(config)
        self.modality = from_config(config)
        self.features = self.modality.features
        sets = prepare_sets(config, out_dir, self.vocab, self.modality, context)
        self.train_set: RecognitionDataset = sets["train"]
        self.dev_set: RecognitionDataset = sets["dev"]
        self.cmvn, self.lm_sentences = sets["cmvn"], sets["lm_sentences"]
        self.device = context.device
        self.model = CTCModel(config.model, self.features.dim, len(self.vocab)).to(self.device)
        self.ddp_model = (
            nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device] if self.device.type == "cuda" else None
            )
            if context.distributed
            else self.model
        )
        # the fused kernel (CPU and CUDA): one pass over all parameters, ~9x faster than the per-tensor
        # loop on the CPU (1.6 vs 14.5 ms a step for the speech model), the same update up to rounding
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=config.train.lr,
            weight_decay=config.train.weight_decay,
            fused=self.device.type in ("cpu", "cuda"),
        )
        self.ctc = nn.CTCLoss(blank=0, reduction="none", zero_infinity=True)
        self.sampler = BucketBatchSampler(
            self.train_set.num_frames(),
            config.data.batch_frames,
            config.data.max_batch,
            seed=config.train.seed,
            sortagrad=config.train.sortagrad,
            sortagrad_share=config.train.sortagrad_share,
            rank=context.rank,
            world_size=context.world_size,
            repeats=oversample_factors(self.train_set.utterances, config.data.oversample),
        )
        self.state = TrainState()
        self.epoch_position = 0  # batches trained in the current epoch
        self.total_steps = len(self.sampler) * config.train.max_epochs
        if config.train.max_steps > 0:
            self.total_steps = min(self.total_steps, config.train.max_steps)
        self.use_cuda_amp = self.device.type == "cuda"
        self.use_cpu_bf16 = training_autocast_bf16(self.device, config.train.bf16)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.use_cuda_amp)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self.language_model = None
        self.ema = WeightAverage(self.model, config.train.ema_decay) if config.train.ema_decay > 0 else None

    # -- checkpoints -------------------------------------------------------------------------
    def payload(self) -> dict:
        """The checkpoint of the weights inference uses: the moving average when there is one."""
        with self.ema.applied(self.model) if self.ema else contextlib.nullcontext():
            return model_payload(
                self.model, self.config, self.vocab, self.features, self.cmvn, self.language_model
            )

    def save_last(self) -> None:
        if not self.context.main:
            return
        payload = self.payload()
        if self.ema:  # the raw weights, which training goes on from
            payload["raw_model_state"] = {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            }
        payload["train_state"] = {
            "state": asdict(self.state),
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict(),
            # The loader draws batches ahead of training: save the position of the last trained batch.
            "sampler": {"epoch": self.sampler.epoch, "position": self.epoch_position},
            "torch_rng": torch.get_rng_state(),
            # how much of metrics.jsonl this state had written: a resumed run cuts the rest off
            "metrics_bytes": self.metrics_path.stat().st_size if self.metrics_path.exists() else 0,
        }
        save_checkpoint(payload, self.out_dir / "last.pt")

    def resume(self) -> bool:
        path = self.out_dir / "last.pt"
        if not path.exists():
            self.log(f"resume: no {path}, starting fresh")
            if self.context.main:
                self.metrics_path.unlink(missing_ok=True)  # a run killed before its first checkpoint
            return False
        payload = load_checkpoint(path)
        if self.ema:
            if "raw_model_state" not in payload:
                raise ValueError(f"{path}: saved without train.ema_decay, cannot resume with it")
            self.model.load_state_dict(payload["raw_model_state"])
            self.ema.load(payload["model_state"])
        else:
            self.model.load_state_dict(payload.get("raw_model_state", payload["model_state"]))
        saved = payload["train_state"]
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scaler.load_state_dict(saved["scaler"])
        self.sampler.load_state_dict(saved["sampler"])
        torch.set_rng_state(saved["torch_rng"])
        self.state = TrainState(**saved["state"])
        self.epoch_position = self.sampler.position
        self.rewind_metrics(saved.get("metrics_bytes"))
        self.log(
            f"resumed from {path} at step {self.state.step}, epoch {self.sampler.epoch}, batch {self.sampler.position}"
        )
        return True

    # -- logging ---------------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.context.main:
            tqdm.write(f"[train] {message}", file=sys.stderr)

    def record(self, entry: dict) -> None:
        if self.context.main:
            with self.metrics_path.open("a") as stream:
                stream.write(json.dumps(entry) + "\n")

    def rewind_metrics(self, size: int | None) -> None:
        """Cut metrics.jsonl back to what it held when the resumed checkpoint was saved: the steps after
        it are trained, and logged, again. `size` None (a checkpoint from before metrics_bytes) or a
        log shorter than it: keep the entries of steps up to the checkpoint's, by their step numbers."""
        if not self.context.main or not self.metrics_path.exists():
            return
        data = self.metrics_path.read_bytes()
        if size is not None and size <= len(data) and (size == 0 or data[:size].endswith(b"\n")):
            kept = data[:size]
        else:
            kept = b"".join(line for line in data.splitlines(keepends=True) if self._before_checkpoint(line))
        if kept != data:
            _write_atomically(self.metrics_path, kept)
            self.log(
                f"resume: metrics.jsonl cut back to step {self.state.step} ({len(data) - len(kept)} bytes)"
            )

    def _before_checkpoint(self, line: bytes) -> bool:
        """Whether a metrics line was written before the resumed checkpoint: a train entry of its step or
        before, an evaluation at its step only if the checkpoint counts it (evaluations follow the log)."""
        try:
            entry = json.loads(line) if line.endswith(b"\n") else None
        except ValueError:
            return False  # a line cut short by the kill
        if not isinstance(entry, dict) or not isinstance(entry.get("step"), int):
            return False
        if entry.get("kind") == "eval" and entry["step"] == self.state.step:
            return self.state.last_eval_step == self.state.step
        return entry["step"] <= self.state.step

    # -- one step --------------------------------------------------------------------------
    def train_step(self, batch: dict) -> tuple[float | None, float]:
        frames = batch["frames"].to(self.device, non_blocking=True)
        lengths = batch["lengths"].to(self.device)
        device_type = self.device.type
        autocast = torch.autocast(
            device_type,
            dtype=torch.float16 if device_type == "cuda" else torch.bfloat16,
            enabled=self.use_cuda_amp or self.use_cpu_bf16,
        )
        with autocast:
            log_probs, out_lengths = self.ddp_model(frames, lengths)  # (batch, time', vocab)
        label_lengths = batch["label_lengths"]
        infeasible = int((out_lengths.cpu() < label_lengths).sum())
        losses = self.ctc(
            log_probs.float().transpose(0, 1),
            batch["labels"].to(self.device),
            out_lengths,
            label_lengths.to(self.device),
        )
        self.state.infeasible_samples += infeasible
        loss = losses.sum() / frames.shape[0]
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.clip_norm))
        if not math.isfinite(norm) or not math.isfinite(float(loss.detach())):
            self.state.skipped_batches += 1
            self.log(f"step {self.state.step}: non-finite gradient (norm {norm}), batch skipped")
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.update()
            return None, norm
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if self.ema:
            self.ema.update(self.model, self.state.step)
        return float(loss.detach()), norm

    # -- evaluation ------------------------------------------------------------------------
    def evaluate_dev(self) -> bool:
        """Greedy dev CER; saves best.pt on improvement; returns True when training should stop."""
        stop = False
        self.state.last_eval_step = self.state.step
        if self.context.main:
            self.model.eval()
            recognizer = Recognizer(
                self.model,
                self.vocab,
                self.modality,
                self.cmvn,
                self.config.decode,
                None,
                str(self.device),
            )
            stored = self.dev_set.stored
            with self.ema.applied(self.model) if self.ema else contextlib.nullcontext():
                result = recognizer.evaluate(self.dev_set.utterances, stored, kinds=("greedy",))["greedy"]
            self.model.train()
            blank = sum(1 for e in result["examples"] if not e["hyp"])
            all_blank = result["cer"] >= 0.999 or blank == len(result["examples"])
            self.state.blank_evals = self.state.blank_evals + 1 if all_blank else 0
            if self.state.blank_evals >= 3:
                self.log(
                    f"WARNING: dev output has been all blank for {self.state.blank_evals} evaluations in a row: "
                    "the model has not started emitting characters (check the learning rate, warmup and data)"
                )
            improved = result["cer"] < self.state.best_cer
            if improved:
                self.state.best_cer, self.state.best_step = result["cer"], self.state.step
                self.state.evals_without_gain = 0
                save_checkpoint(self.payload(), self.out_dir / "best.pt")
            else:
                self.state.evals_without_gain += 1
            self.record(
                {
                    "kind": "eval",
                    "step": self.state.step,
                    "epoch": self.sampler.epoch,
                    "dev_cer": result["cer"],
                    "dev_wer": result["wer"],
                    "best": improved,
                }
            )
            self.log(
                f"step {self.state.step} epoch {self.sampler.epoch}: dev CER {100 * result['cer']:.2f}% "
                f"WER {100 * result['wer']:.2f}%{' (best)' if improved else ''}  e.g. '{result['examples'][0]['hyp'] if result['examples'] else ''}'"
            )
            stop = self.state.evals_without_gain >= self.config.train.patience
            if stop:
                self.log(f"early stop: no dev CER gain in {self.config.train.patience} evaluations")
        return self.context.broadcast_flag(stop)

    # -- the loop --------------------------------------------------------------------------
    def out_of_time(self) -> bool:
        """The clock's budget or the step budget spent."""
        budget, steps = self.config.train.max_minutes, self.config.train.max_steps
        return (budget > 0 and self.state.elapsed >= 60.0 * budget) or (
            steps > 0 and self.state.step >= steps
        )

    def fit(self) -> None:
        config = self.config.train
        self.model.train()
        loader_args = dict(
            collate_fn=collate,
            num_workers=self.config.data.workers,
            worker_init_fn=worker_init,
            prefetch_factor=4 if self.config.data.workers else None,
        )
        progress = tqdm(
            total=self.total_steps,
            initial=self.state.step,
            disable=not self.context.main,
            mininterval=1.0 if sys.stderr.isatty() else 30.0,
            unit="step",
            dynamic_ncols=True,
        )
        window = {
            "loss": 0.0,
            "norm": 0.0,
            "steps": 0,
            "frames": 0,
            "wait": 0.0,
            "start": time.perf_counter(),
        }
        stop = self.state.finished
        while not stop and self.sampler.epoch < config.max_epochs:
            loader = torch.utils.data.DataLoader(self.train_set, batch_sampler=self.sampler, **loader_args)
            iterator = iter(loader)
            while True:
                tick = time.perf_counter()
                try:
                    batch = next(iterator)
                except StopIteration:
                    break
                window["wait"] += time.perf_counter() - tick
                for group in self.optimizer.param_groups:
                    group["lr"] = learning_rate(config, self.state, self.total_steps)
                loss, norm = self.train_step(batch)
                self.state.step += 1
                self.epoch_position += 1
                self.state.elapsed += time.perf_counter() - tick
                progress.update(1)
                if loss is not None:
                    window["loss"] += loss
                    window["norm"] += norm
                    window["steps"] += 1
                window["frames"] += int(batch["lengths"].sum())
                if self.state.step % config.log_every == 0:
                    self.flush_window(window, progress)
                if config.eval_every and self.state.step % config.eval_every == 0:
                    stop = self.evaluate_dev()
                if self.state.step % config.checkpoint_every == 0:
                    self.save_last()
                stop = stop or self.context.broadcast_flag(self.out_of_time())
                if stop:
                    break
            if stop:
                break
            self.sampler.next_epoch()
            self.epoch_position = 0
            if not config.eval_every:
                stop = self.evaluate_dev()
        if config.max_steps > 0 and self.state.step >= config.max_steps:
            self.log(f"step budget of {config.max_steps} steps reached")
        elif self.out_of_time():
            self.log(f"time budget of {config.max_minutes} min reached at step {self.state.step}")
        if self.state.last_eval_step != self.state.step and not self.state.finished:
            self.evaluate_dev()
        self.state.finished = True
        progress.close()
        self.save_last()

    def flush_window(self, window: dict, progress: tqdm) -> None:
        seconds = time.perf_counter() - window["start"]
        frames = self.context.all_reduce_sum([float(window["frames"])])[0]
        entry = {
            "kind": "train",
            "step": self.state.step,
            "epoch": self.sampler.epoch,
            "loss": window["loss"] / max(1, window["steps"]),
            "grad_norm": window["norm"] / max(1, window["steps"]),
            "lr": self.optimizer.param_groups[0]["lr"],
            "frames_per_s": frames / max(seconds, 1e-9),
            "data_wait_share": window["wait"] / max(seconds, 1e-9),
            "skipped_batches": self.state.skipped_batches,
            "infeasible_samples": self.state.infeasible_samples,
        }
        self.record(entry)
        postfix = {
            "loss": f"{entry['loss']:.3f}",
            "fps": f"{entry['frames_per_s']:.0f}",
            "wait": f"{entry['data_wait_share']:.0%}",
        }
        if self.config.train.max_minutes > 0:  # the clock, not the step count, ends this run: show its ETA
            postfix["budget_left"] = (
                f"{max(0.0, self.config.train.max_minutes - self.state.elapsed / 60):.1f}min"
            )
        progress.set_postfix(postfix)
        window.update(loss=0.0, norm=0.0, steps=0, frames=0, wait=0.0, start=time.perf_counter())


def _write_atomically(path: Path, data: bytes) -> None:
    """Write to a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def throughput_summary(metrics_path: Path) -> dict:
    """Median training frames/s and share of wall time spent waiting for data, over the logged windows."""
    windows = [
        entry for entry in map(json.loads, metrics_path.read_text().splitlines()) if entry["kind"] == "train"
    ]
    if not windows:
        return {}
    return {
        "median_frames_per_s": statistics.median(w["frames_per_s"] for w in windows),
        "median_data_wait_share": statistics.median(w["data_wait_share"] for w in windows),
        "max_data_wait_share": max(w["data_wait_share"] for w in windows),
    }


def final_report(trainer: Trainer, config: Config, out_dir: Path, sets: dict) -> dict:
    """Evaluate best.pt on every evaluation set with greedy and beam search; write report.json."""
    recognizer = Recognizer.load(out_dir / "best.pt")
    report = {
        "checkpoint": str(out_dir / "best.pt"),
        "best_step": trainer.state.best_step,
        "train_steps": trainer.state.step,
        "train_minutes": trainer.state.elapsed / 60.0,
        "throughput": throughput_summary(trainer.metrics_path),
        "skipped_batches": trainer.state.skipped_batches,
        "infeasible_samples": trainer.state.infeasible_samples,
        "sets": {},
    }
    dev_name = Path(config.data.dev).stem  # "dev" for speech and ink, "dev-images" for line images
    tune_on = dev_name if dev_name in sets else ("dev" if "dev" in sets else None)
    if tune_on and recognizer.language_model:
        decode = config.decode
        tuning = recognizer.tune_beam(
            *sets[tune_on], decode.tune_lm_weights, decode.tune_word_scores, decode.tune_unk_scores
        )
        report["beam_tuning"] = {"set": tune_on, **tuning}
        payload = load_checkpoint(out_dir / "best.pt")
        payload["decode"] = asdict(recognizer.decode_config)
        save_checkpoint(
            {k: v for k, v in payload.items() if k not in ("format", "version")}, out_dir / "best.pt"
        )
        best = tuning["best"]
        print(
            f"beam search tuned on {tune_on}: lm_weight {best['lm_weight']}, word_score "
            f"{best['word_score']}, unk_score {best['unk_score']} (dev WER {100 * best['wer']:.1f}%)"
        )
    for name, (utterances, stored) in sets.items():
        report["sets"][name] = recognizer.evaluate(utterances, stored, group_by=config.data.group_by or None)
    report["preflight"] = (
        json.loads((out_dir / "preflight.json").read_text()) if (out_dir / "preflight.json").exists() else {}
    )
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(format_table(report))
    print(format_examples(report))
    return report


def train(config: Config, out_dir: str | Path, resume: bool = False) -> dict | None:
    """Train per `config` into `out_dir`; returns the evaluation report (on rank 0)."""
    out_dir = Path(out_dir)
    context = init_distributed()
    try:
        torch.manual_seed(config.train.seed + context.rank)
        if config.train.threads:
            torch.set_num_threads(config.train.threads)
        if context.main:
            out_dir.mkdir(parents=True, exist_ok=True)
            prepare_corpus(config.data)
            if not resume:
                for name in ("metrics.jsonl", "last.pt", "best.pt", "report.json"):
                    (out_dir / name).unlink(missing_ok=True)
        context.barrier()
        trainer = Trainer(config, out_dir, context)
        if resume:
            trainer.resume()
        if context.main:
            trainer.language_model = language_model_assets(trainer, out_dir)
            (out_dir / "config.json").write_text(json.dumps(config_to_dict(config), indent=2))
            cpu_fallback = context.device.type == "cpu" and config.train.bf16 and not trainer.use_cpu_bf16
            trainer.log(
                f"{len(trainer.train_set)} training {trainer.modality.items}, {len(trainer.sampler)} batches per epoch, "
                f"{sum(p.numel() for p in trainer.model.parameters()) / 1e6:.2f}M parameters, "
                f"device {context.device}{', bf16 autocast' if trainer.use_cpu_bf16 else ''}"
                f"{', fp32 (train.bf16: no bf16 kernels on this CPU)' if cpu_fallback else ''}"
                f"{', AMP' if trainer.use_cuda_amp else ''}, {context.world_size} process(es)"
            )
        trainer.fit()
        report = None
        if context.main:
            plot_curves(trainer.metrics_path, out_dir / "curves.png")
            eval_sets = prepare_eval_sets(trainer, config)
            report = final_report(trainer, config, out_dir, eval_sets)
        context.barrier()
        return report
    finally:
        shutdown(context)


def language_model_assets(trainer: Trainer, out_dir: Path) -> dict:
    """Lexicon and word n-gram LM from the training text, kept inside the checkpoint as text."""
    paths = prepare_language_model(
        trainer.lm_sentences, trainer.vocab, out_dir / "lm", trainer.config.decode.lm_order
    )
    return {"lexicon": Path(paths["lexicon"]).read_text(), "arpa": Path(paths["lm"]).read_text()}


def prepare_eval_sets(trainer: Trainer, config: Config) -> dict:
    from recog.datasets.sets import load_eval_set

    return {
        Path(name).stem: load_eval_set(config, name, trainer.out_dir, trainer.vocab, trainer.modality)
        for name in config.data.eval_sets
    }
