"""`make train-handwriting` / `make train-handwriting-offline`: build the synthetic handwriting corpus
(cached), train the ink or line-image model the config names, evaluate dev / test / test-seen with
greedy and beam search (lexicon + word LM from lm-text.txt), print the results table.

    python -m pipelines.train_handwriting --config configs/handwriting.yaml --out runs/handwriting
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from recog.config import load_config
from recog.datasets.sets import prepare_corpus
from recog.report import format_table
from recog.train import train


def held_out(root: Path) -> dict:
    """What the evaluation sets hold out, from the corpus summary: styles and outline-font families."""
    summary_path = root / "corpus.json"
    if not summary_path.exists():
        return {}
    summary = json.loads(summary_path.read_text())
    return {
        "styles": summary.get("styles", {}),
        "outline_fonts": {k: v for k, v in summary.get("outline_fonts", {}).items() if k != "train"},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/handwriting.yaml")
    parser.add_argument("--out", default="runs/handwriting")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/last.pt")
    args = parser.parse_args(argv)

    config = load_config(args.config, args.set)
    if config.task not in ("ink", "image"):
        print(
            f"{args.config}: task is {config.task!r}, this recipe trains ink or image models", file=sys.stderr
        )
        return 2
    out = Path(args.out)
    started = time.perf_counter()
    root = prepare_corpus(config.data)
    corpus_seconds = time.perf_counter() - started
    report = train(config, out, resume=args.resume)
    total_seconds = time.perf_counter() - started
    if report is None:
        return 0
    timings = {
        "corpus_minutes": corpus_seconds / 60,
        "train_and_eval_minutes": (total_seconds - corpus_seconds) / 60,
        "total_minutes": total_seconds / 60,
    }
    report.update(task=config.task, config=args.config, held_out=held_out(root), timings=timings)
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(f"\n== results ({args.config}, task {config.task}, {out}/report.json) ==")
    print(format_table(report))
    speed = report.get("throughput", {})
    if speed:
        print(
            f"training: {report['train_steps']} steps in {report['train_minutes']:.1f} min, median "
            f"{speed['median_frames_per_s']:.0f} frames/s, waiting for data {100 * speed['median_data_wait_share']:.1f}% "
            f"(max {100 * speed['max_data_wait_share']:.1f}%)"
        )
    print(
        f"corpus {timings['corpus_minutes']:.1f} min, training + evaluation {timings['train_and_eval_minutes']:.1f} min, "
        f"total {timings['total_minutes']:.1f} min (set-up not included)",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
