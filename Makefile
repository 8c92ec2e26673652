# mmcurate: every target installs what it needs into .venv first (fresh machine: `make demo`, `make test`).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

# Corpus runs: override on the command line, e.g. `make caption INPUT=s3://bucket/{00000..00099}.tar OUTPUT=s3://out`.
# Each target has its own default output folder (out/<target>): no target writes into another's.
INPUT ?=
OUTPUT ?=
CONFIG ?=
BEAM_ARGS ?=
# RESUME=1: go on with a killed run (--resume); otherwise the folder's previous run is replaced (--overwrite)
RESUME ?=
# label-studio-sdk without its pins (pyproject's `annotate` extra holds what it needs at run time).
ANNOTATE_SDK := label-studio-sdk==2.1.2
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# One target per corpus of the registry (pipelines/corpus.py; tests/test_corpus.py checks the two agree).
CORPORA := caption video interleaved ocr grounding sft rl

.PHONY: install demo test $(CORPORA) ocr-render select bench lint format clean ffmpeg fonts chromium \
	annotate-server annotate-stop annotate-push annotate-pull

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml constraints.txt env/torchvision_cpu_shim.py env/install_cpu_shim.py env/headless_opencv.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,models,rl,video,interleaved,ocr,annotate]'
	$(PY) -m pip install -q --no-deps $(ANNOTATE_SDK)
	$(PY) env/headless_opencv.py
	$(PY) env/install_cpu_shim.py
	touch $@

demo: install fonts
	$(BIN)/mmcurate demo --workdir demo $(BEAM_ARGS)
	$(BIN)/mmcurate demo --corpus interleaved --workdir demo $(BEAM_ARGS)
	$(BIN)/mmcurate demo --corpus ocr --workdir demo $(BEAM_ARGS)
	$(BIN)/mmcurate demo --corpus grounding --workdir demo $(BEAM_ARGS)

RUN_FLAGS = $(if $(CONFIG),--config $(CONFIG)) $(if $(RESUME),--resume,--overwrite) $(BEAM_ARGS)

# Image-caption pairs; without INPUT, the demo corpus (`make demo` builds it).
caption: install
	$(BIN)/mmcurate caption --input $(or $(INPUT),demo/corpus) --output $(or $(OUTPUT),out/caption) $(RUN_FLAGS)

# Pass-rate selection needs questions and a model: `make rl INPUT=questions.jsonl CONFIG=rl.yaml` (docs/rl.md).
sft rl: install
	$(if $(INPUT),,$(error make $@ needs INPUT=<questions jsonl/parquet> and CONFIG=<yaml naming the model>; see docs/rl.md))
	$(BIN)/mmcurate $@ --input $(INPUT) --output $(or $(OUTPUT),out/$@) $(RUN_FLAGS)

# Videos: folders/URIs of video files, video webdataset shards, or jsonl, e.g.
# `make video INPUT=/data/raw-videos OUTPUT=/data/clips`. Without INPUT: the generated demo video corpus.
video: install ffmpeg
ifeq ($(origin INPUT),command line)
	$(BIN)/mmcurate video --input $(INPUT) --output $(or $(OUTPUT),out/video) $(RUN_FLAGS)
else
	$(BIN)/mmcurate demo --corpus video --workdir demo $(BEAM_ARGS)
endif

# Interleaved documents: MMC4 / Data-Juicer jsonl or OBELICS parquet, e.g.
# `make interleaved INPUT=/data/mmc4/docs_shard_{0..99}.jsonl CONFIG=mmc4.yaml` (read.image_root in the config).
# Without INPUT: the generated demo documents.
interleaved: install
ifeq ($(origin INPUT),command line)
	$(BIN)/mmcurate interleaved --input $(INPUT) --output $(or $(OUTPUT),out/interleaved) $(RUN_FLAGS)
else
	$(BIN)/mmcurate demo --corpus interleaved --workdir demo $(BEAM_ARGS)
endif

# Grounding samples: ODVG jsonl, RefCOCO refs(unc).p (+ read.instances), grounding conversations, e.g.
# `make grounding INPUT='/data/refcoco/refs(unc).p' CONFIG=refcoco.yaml` (read.image_root: the COCO images).
# Without INPUT: the demo (bundled photographs with drawn shapes at known boxes, and the bad boxes).
grounding: install
ifeq ($(origin INPUT),command line)
	$(BIN)/mmcurate grounding --input $(INPUT) --output $(or $(OUTPUT),out/grounding) $(RUN_FLAGS)
else
	$(BIN)/mmcurate demo --corpus grounding --workdir demo $(BEAM_ARGS)
endif

# OCR samples: ICDAR folders (gt_<name>.txt; read.gt_root in the config), COCO-Text / mmocr JSON,
# recognition labels, transcripts, e.g. `make ocr INPUT=/data/icdar2015/imgs CONFIG=icdar.yaml`; or the
# images a caption run dropped for their text: `make ocr FROM_RUN=out/caption`. Without either: the demo.
FROM_RUN ?=
ocr: install fonts
ifeq ($(origin INPUT),command line)
	$(BIN)/mmcurate ocr --input $(INPUT) --output $(or $(OUTPUT),out/ocr) $(RUN_FLAGS)
else ifneq ($(FROM_RUN),)
	$(BIN)/mmcurate ocr --from-run $(FROM_RUN) --output $(or $(OUTPUT),out/ocr) $(RUN_FLAGS)
else
	$(BIN)/mmcurate demo --corpus ocr --workdir demo $(BEAM_ARGS)
endif

# Synthetic OCR samples with exact labels: `make ocr-render COUNT=10000 OUTPUT=/data/rendered WORKERS=8`.
COUNT ?= 1000
WORKERS ?= 1
ocr-render: install fonts
	$(BIN)/mmcurate ocr-render --output $(or $(OUTPUT),out/ocr-rendered) --count $(COUNT) --workers $(WORKERS) $(if $(CONFIG),--config $(CONFIG))

# The fonts the OCR renderer draws with (Latin: DejaVu; Chinese: WenQuanYi Zen Hei, 7.5 MB).
fonts:
	test -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf -a -f /usr/share/fonts/truetype/wqy/wqy-zenhei.ttc || \
		{ $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq fonts-dejavu-core fonts-wqy-zenhei; }

# Debian's Chromium, for the labeling-UI test (Playwright drives it; no browser download).
chromium:
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

ffmpeg:
	command -v ffmpeg >/dev/null || { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq ffmpeg fonts-dejavu-core; }

select: install
	$(if $(RUN),,$(error make select needs RUN=<an earlier run's folder> and CONFIG=<new thresholds>))
	$(BIN)/mmcurate select --run $(RUN) --output $(or $(OUTPUT),$(RUN)-select) $(RUN_FLAGS)

test: install ffmpeg fonts chromium
	$(BIN)/ruff check .
	$(PY) -m pytest -q -n 2 --dist loadfile

# Label Studio (docs/annotation.md): a local server in its own cached env on 127.0.0.1:$(LS_PORT), data and
# served clips in $(LS_ROOT); Ctrl-C or `make annotate-stop` stops it. push/pull talk to the server named by
# LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY (a local one's token is in $(LS_ROOT)/token).
LS_ROOT ?= annotate
LS_PORT ?= 8080
annotate-server: install
	$(BIN)/mmcurate annotate server --root $(LS_ROOT) --port $(LS_PORT)

annotate-stop:
	test -f $(LS_ROOT)/server.pid && kill -TERM $$(cat $(LS_ROOT)/server.pid) || echo "no Label Studio running from $(LS_ROOT)"

annotate-push annotate-pull: install
	$(if $(RUN),,$(error make $@ needs RUN=<a video run's output folder>))
	$(BIN)/mmcurate annotate $(subst annotate-,,$@) --run $(RUN) --root $(LS_ROOT) $(ANNOTATE_ARGS)

bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

format: install
	$(BIN)/ruff format . && $(BIN)/ruff check --fix .

clean:
	rm -rf demo out bench/out .pytest_cache .ruff_cache
