# Two entry points, both idempotent on a fresh Debian machine with Python 3.11 as root:
#   make demo  - install everything, run the main job on the shipped model
#   make test  - install everything, run the test suite
# And for releases and CI (.ci/run runs `make test` then `make test-pi`):
#   make dist     - sdist + wheel in dist/, checked with twine (the version: device/__init__.py)
#   make test-pi  - that wheel installed with [device] in an arm64 Raspberry Pi OS (bookworm) rootfs under
#                   qemu, self-test + events compared with x86 on cortex-a72 (Pi 4) and cortex-a76 (Pi 5)
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# System pieces: PortAudio + PulseAudio for the fake-microphone tests, libsndfile
# for soundfile, FluidR3 for the corpus builder's SoundFont path; chromium + chromium-driver for the live
# page's browser test, mosquitto for the MQTT test (the tests start their own broker on a free port; the
# system's mosquitto service is not used and need not run).
APT_PACKAGES := libportaudio2 libsndfile1 pulseaudio pulseaudio-utils libasound2-plugins fluid-soundfont-gm espeak-ng \
  chromium chromium-driver mosquitto

# The full default corpus also renders MuseScore General (86 MB); only `make corpus` needs it.
CORPUS_APT_PACKAGES := musescore-general-soundfont espeak-ng
SHARED ?= ../shared/sample-libraries
CORPUS ?= data/corpus

.PHONY: demo test apt venv lint clean corpus dist test-pi

apt: .stamp-apt
.stamp-apt: Makefile
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

venv: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml .stamp-apt
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null; }
	@[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[dev]'
	# tinysoundfont's metadata pulls a numpy pin we do not want; its wheel needs nothing else.
	$(PIP) install -q --no-deps 'tinysoundfont==0.3.7'
	@touch $@

# The main job: the daemon on the shipped recording with the shipped model (models/default.tflite).
demo: venv
	$(VENV)/bin/instrument-ai run --source demo --plain

test: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy  # the package instrument_ai.device, strict: see [tool.mypy] in pyproject.toml
	$(PY) -m pytest -q

# The whole corpus in one command: fetch every catalogue source (pinned commits, resumable) into
# SOURCES_CACHE, then build SoundFonts + recorded notes + SFZ + `other` + synth notes into CORPUS.
# SOURCES_FROM=DIR reads existing clones or bare mirrors instead of the internet; SHARED=DIR adds the
# shared sample libraries when that folder exists (a user's machine has none: the apt fonts are used).
SOURCES_FROM ?=
SOURCES_CACHE ?= $(HOME)/.cache/instrument-ai/sources
SYNTH_INSTRUMENTS ?= 60
SOURCE_ARGS = $(if $(SOURCES_FROM),--from $(SOURCES_FROM)) --cache $(SOURCES_CACHE)
# (Until the catalogue train/sources/sources.toml exists, the build has no catalogue sources to fetch.)
CATALOGUE := $(wildcard train/sources/sources.toml)
corpus: venv
	@dpkg -s $(CORPUS_APT_PACKAGES) >/dev/null 2>&1 || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(CORPUS_APT_PACKAGES) >/dev/null
	$(if $(CATALOGUE),$(VENV)/bin/instrument-ai data fetch $(SOURCE_ARGS))
	$(VENV)/bin/instrument-ai data build --out $(CORPUS) $(if $(wildcard $(SHARED)),--shared-libraries $(SHARED)) \
	  $(if $(CATALOGUE),--sources all $(SOURCE_ARGS)) --other --synth $(SYNTH_INSTRUMENTS) --jobs 2

# The wheel a Pi installs (docs/raspberry-pi.md), with the shipped models and the device assets inside.
dist: venv
	rm -rf dist
	$(PY) -m build --quiet --outdir dist .
	$(VENV)/bin/twine check --strict dist/*

# qemu-user + debootstrap for the arm64 install test; the base rootfs is cached in ~/.cache/instrument-ai.
PI_APT_PACKAGES := qemu-user-static binfmt-support debootstrap zstd
.stamp-apt-pi: Makefile
	@missing=""; for p in $(PI_APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "apt: installing$$missing"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi
	@touch $@

test-pi: dist .stamp-apt-pi
	.ci/test-pi.sh dist/instrument_ai-*-py3-none-any.whl

lint: venv
	$(VENV)/bin/ruff check .
	$(PY) -m mypy

clean:
	rm -rf $(VENV) .stamp-apt .stamp-apt-pi build dist *.egg-info
