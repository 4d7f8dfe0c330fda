# recog: the two commands a new user runs are `make train-speech` and `make test`.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
RECOG := $(VENV)/bin/recog
STAMP := $(VENV)/.setup-done

.PHONY: setup train-speech train-handwriting train-handwriting-offline test lint bench-train

setup: $(STAMP)

$(STAMP): requirements.txt pyproject.toml pipelines/setup.sh
	bash pipelines/setup.sh
	touch $@

## Generate the multi-voice corpus (cached), train, evaluate: results in runs/speech/report.json.
## With DATA=/path/to/LibriSpeech: import train-clean-100, dev-clean, test-clean (+ dev-other, test-other)
## into data/librispeech once, train configs/librispeech-100.yaml into runs/librispeech-100 (docs/real-data.md;
## CONFIG=, CORPUS= and RUN= pick another config, import folder and run folder)
train-speech: setup
ifeq ($(DATA),)
	$(PY) -m pipelines.train_speech --config configs/speech.yaml --out runs/speech
else
	$(TRAIN_REAL) librispeech
endif

## Synthetic ink corpus (cached), online (pen-stroke) model, evaluate: runs/handwriting/report.json.
## With DATA=/path/to/IAM-OnDB: import it into data/iam-ondb once, train configs/iam-ondb.yaml into runs/iam-ondb
train-handwriting: setup
ifeq ($(DATA),)
	$(PY) -m pipelines.train_handwriting --config configs/handwriting.yaml --out runs/handwriting
else
	$(TRAIN_REAL) iam-ondb
endif

## The same corpus as line images, offline (image) model: runs/handwriting-offline/report.json.
## With DATA=/path/to/IAM: import its text lines into data/iam-lines once, train configs/iam-lines.yaml into runs/iam-lines
train-handwriting-offline: setup
ifeq ($(DATA),)
	$(PY) -m pipelines.train_handwriting --config configs/handwriting-offline.yaml --out runs/handwriting-offline
else
	$(TRAIN_REAL) iam-lines
endif

# The DATA= branch of the three training targets: pipelines/train_real.py (import once, train, evaluate)
TRAIN_REAL = $(PY) -m pipelines.train_real --data "$(DATA)" $(if $(CONFIG),--config "$(CONFIG)") \
	$(if $(CORPUS),--corpus "$(CORPUS)") $(if $(RUN),--out "$(RUN)")

test: setup
	$(PY) -m pytest tests
	@echo "== the model's fp32 path as on a CPU without bf16 (oneDNN capped at AVX2) =="
	ONEDNN_MAX_CPU_ISA=AVX2 $(PY) -m pytest tests/test_model.py tests/test_benchmarks.py

lint: setup
	$(VENV)/bin/ruff check recog pipelines tests benchmarks
	$(VENV)/bin/ruff format --check recog pipelines tests benchmarks

## Encoder training-step throughput (padded vs packed LSTM, concurrent directions, dropout masks, bf16 vs fp32, frame stacking): runs/bench/train_speed.json
bench-train: setup
	$(PY) benchmarks/train_speed.py

.PHONY: transcribe bench-transcribe
MODEL ?= runs/speech/best.pt
IN ?=
OUT ?= runs/transcripts/$(notdir $(abspath $(IN))).jsonl
FORMAT ?= jsonl

## Transcribe a folder (or files, list files, manifests) with the default model, beam search + LM,
## resumable: make transcribe IN=recordings/ [OUT=out.jsonl] [FORMAT=jsonl,srt,vtt,txt] [MODEL=...]
transcribe: setup
	@test -n "$(IN)" || { echo "usage: make transcribe IN=folder [OUT=out.jsonl] [FORMAT=jsonl,srt]"; exit 2; }
	$(RECOG) transcribe --model $(MODEL) $(IN) -o $(OUT) --format $(FORMAT) --beam --precision auto --progress

## Batch transcription speed and memory against pocketsphinx (installed here when missing; not a
## dependency of recog): runs/bench/transcribe.json. BENCH_ARGS="--files 20 --quick" for a smoke test
bench-transcribe: setup
	@$(PY) -c "import pocketsphinx" 2>/dev/null || $(VENV)/bin/pip install pocketsphinx==5.1.1
	$(PY) benchmarks/transcribe.py $(BENCH_ARGS)

## CTC beam search speed and WER against pyctcdecode, flashlight and fast-ctc-decode (benchmark-only
## peers, installed here when missing; pyctcdecode without its numpy<2 pin): runs/bench/decoder.json.
## BENCH_ARGS="--quick" for a smoke test
.PHONY: bench-decoder
bench-decoder: setup
	@$(PY) -c "import pyctcdecode" 2>/dev/null || $(VENV)/bin/pip install --no-deps pyctcdecode==0.5.0 pygtrie==2.6.2
	@$(PY) -c "import fast_ctc_decode" 2>/dev/null || $(VENV)/bin/pip install --no-deps fast-ctc-decode==0.3.7 || true
	@$(PY) -c "import kenlm" 2>/dev/null || $(VENV)/bin/pip install --no-deps kenlm==0.3.0 || true
	@$(PY) -c "import flashlight.lib.text" 2>/dev/null || $(VENV)/bin/pip install --no-deps flashlight-text==0.0.7 || true
	$(PY) benchmarks/decoder.py $(BENCH_ARGS)

.PHONY: read
HW_MODEL ?= runs/handwriting/best.pt

## Read handwriting (ink files .inkml/.xml/.json, or line images with an offline model; folders
## recursive), beam search + LM, resumable: make read IN=scans/ [OUT=out.jsonl] [HW_MODEL=runs/handwriting-offline/best.pt]
read: setup
	@test -n "$(IN)" || { echo "usage: make read IN=folder [OUT=out.jsonl] [HW_MODEL=...]"; exit 2; }
	$(RECOG) read --model $(HW_MODEL) $(IN) -o $(OUT) --beam --progress
