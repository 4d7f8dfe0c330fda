# recog: the two commands a new user runs are `make train-speech` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RECOG := $(VENV)/bin/recog
STAMP := $(VENV)/.setup-done

.PHONY: setup train-speech test lint bench-train

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml pipelines/setup.sh
	bash pipelines/setup.sh
	touch $@

## Generate the multi-voice corpus (cached), train, evaluate: results in runs/speech/report.json
train-speech: setup
	$(PY) -m pipelines.train_speech --config configs/speech.yaml --out runs/speech

test: setup
	$(PY) -m pytest tests

lint: setup
	$(VENV)/bin/ruff check recog pipelines tests benchmarks
	$(VENV)/bin/ruff format --check recog pipelines tests benchmarks

## Encoder training-step throughput (padded vs packed LSTM, bf16 vs fp32, frame stacking): runs/bench/train_speed.json
bench-train: setup
	$(PY) benchmarks/train_speed.py
