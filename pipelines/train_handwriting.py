"""`make train-handwriting` / `make train-handwriting-offline`: build the synthetic handwriting corpus
(cached), train the ink or line-image model the config names, evaluate dev / test / test-seen with
greedy and beam search (lexicon + word LM from lm-text.txt), print the results table.

    python -m pipelines.train_handwriting --config configs/handwriting.yaml --out runs/handwriting
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pipelines.recipe import parse_args, run_recipe
from recog.config import Config


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
    args = parse_args(__doc__.splitlines()[0], "configs/handwriting.yaml", "runs/handwriting", argv)

    def check(config: Config) -> str | None:
        if config.task not in ("ink", "image"):
            return f"task is {config.task!r}, this recipe trains ink or image models"
        return None

    return run_recipe(
        args,
        check,
        lambda config, root: {"task": config.task, "config": args.config, "held_out": held_out(root)},
    )


if __name__ == "__main__":
    sys.exit(main())
