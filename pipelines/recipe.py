"""What every training recipe does: parse the common options, build the corpus (cached), train,
evaluate, write `report.json` with timings and print the results table."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

from recog.config import Config, load_config
from recog.datasets.sets import prepare_corpus
from recog.report import format_table
from recog.train import train


def parse_args(description: str, config: str, out: str, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=config)
    parser.add_argument("--out", default=out)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted run from OUT/last.pt")
    return parser.parse_args(argv)


def run_recipe(
    args: argparse.Namespace,
    check: Callable[[Config], str | None] | None = None,
    extra: Callable[[Config, Path], dict] | None = None,
) -> int:
    """Corpus -> train -> evaluate -> report; `check` may refuse the config (returns the reason),
    `extra` adds recipe-specific fields to the report (given the config and the corpus folder)."""
    config = load_config(args.config, args.set)
    if check is not None and (problem := check(config)):
        print(f"{args.config}: {problem}", file=sys.stderr)
        return 2
    out = Path(args.out)
    started = time.perf_counter()
    root = prepare_corpus(config.data)
    corpus_seconds = time.perf_counter() - started
    report = train(config, out, resume=args.resume)
    total_seconds = time.perf_counter() - started
    if report is None:  # not the main process of a distributed run
        return 0
    timings = {
        "corpus_minutes": corpus_seconds / 60,
        "train_and_eval_minutes": (total_seconds - corpus_seconds) / 60,
        "total_minutes": total_seconds / 60,
    }
    report.update(extra(config, root) if extra is not None else {})
    report["timings"] = timings
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
