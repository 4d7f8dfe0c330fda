"""`make train-speech`: generate the multi-voice corpus (cached), train, evaluate, print the results table."""

from __future__ import annotations

import sys

from pipelines.recipe import parse_args, run_recipe


def main(argv: list[str] | None = None) -> int:
    return run_recipe(parse_args(__doc__, "configs/speech.yaml", "runs/speech", argv))


if __name__ == "__main__":
    sys.exit(main())
