"""Results tables and training curves."""

from __future__ import annotations

import json
from pathlib import Path


def format_table(report: dict) -> str:
    """Rows per evaluation set and group (voice, style, font), columns greedy/beam WER and CER, in percent."""
    width = max([10, *(len(name) for name in report.get("sets", {}))])
    lines = [
        f"{'set':<{width}} {'group':<28} {'utts':>5}  {'greedy WER':>10} {'greedy CER':>10}  {'beam WER':>9} {'beam CER':>9}"
    ]
    lines.append("-" * len(lines[0]))
    for name, result in report.get("sets", {}).items():
        greedy, beam = result.get("greedy", {}), result.get("beam", {})
        rows = [("all", greedy, beam)] + [
            (group, greedy["groups"][group], beam.get("groups", {}).get(group, {}))
            for group in greedy.get("groups", {})
            if len(greedy["groups"]) > 1
        ]
        for group, g, b in rows:
            lines.append(
                f"{name:<{width}} {group:<28} {g.get('utterances', 0):>5}  {_pct(g, 'wer'):>10} {_pct(g, 'cer'):>10}"
                f"  {_pct(b, 'wer'):>9} {_pct(b, 'cer'):>9}"
            )
    return "\n".join(lines)


def format_examples(report: dict, limit: int = 3) -> str:
    lines = []
    for name, result in report.get("sets", {}).items():
        for kind in ("greedy", "beam"):
            for example in result.get(kind, {}).get("examples", [])[:limit]:
                lines.append(
                    f"[{name} {kind}] ref: {example['ref']}\n{' ' * (len(name) + len(kind) + 3)} hyp: {example['hyp']}"
                )
    return "\n".join(lines)


def _pct(result: dict, key: str) -> str:
    return f"{100 * result[key]:.1f}" if key in result else "-"


def plot_curves(metrics_path: Path, png_path: Path) -> None:
    """Training loss and dev CER against steps, from metrics.jsonl."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train_steps, losses, eval_steps, cers = [], [], [], []
    for line in Path(metrics_path).read_text().splitlines():
        entry = json.loads(line)
        if entry.get("kind") == "train":
            train_steps.append(entry["step"])
            losses.append(entry["loss"])
        elif entry.get("kind") == "eval":
            eval_steps.append(entry["step"])
            cers.append(100 * entry["dev_cer"])
    figure, (loss_axis, cer_axis) = plt.subplots(1, 2, figsize=(10, 4))
    loss_axis.plot(train_steps, losses)
    loss_axis.set(xlabel="step", ylabel="CTC loss (per utterance)", title="training loss")
    loss_axis.set_yscale("log")
    cer_axis.plot(eval_steps, cers, marker="o")
    cer_axis.set(xlabel="step", ylabel="CER %", title="dev CER (greedy)")
    figure.tight_layout()
    figure.savefig(png_path, dpi=100)
    plt.close(figure)
