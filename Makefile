# Two commands on a fresh machine: `make run` (the main job) and `make test` (the whole suite).
# Both create .venv and install what is missing, Debian's ffmpeg included where apt exists.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch goes in first and pinned: on CPU-only machines that is the local CPU wheel, and nothing
# later may pull a different build with gigabytes of CUDA packages.
TORCH_SPEC ?= torch==2.13.0
# basic-pitch from PyPI requires TensorFlow; tools/basic_pitch_wheel.py rewrites its wheel's
# metadata to need onnxruntime instead. It keeps the official wheel next to it (no download on
# later runs, and the tests rebuild from it).
BASIC_PITCH_WHEEL := $(VENV)/wheels/basic_pitch-0.4.0+onnx-py2.py3-none-any.whl
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test install install-dev system-deps test-deps lint format bench clean

run: install
	$(BIN)/neurochip app

test: install-dev
	$(BIN)/python -m pytest

# Refresh docs/arrange.png, the README's picture of the app (a plain test run writes it to a
# temporary folder, leaving the tree clean).
.PHONY: screenshots
screenshots: install-dev
	NEUROCHIP_SCREENSHOTS=docs $(BIN)/python -m pytest tests/test_browser.py

lint: install-dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: install
	$(BIN)/python bench/roundtrip.py

install: system-deps $(VENV)/.installed

install-dev: install test-deps $(VENV)/.installed-dev

system-deps:
	@command -v ffmpeg >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing ffmpeg (Debian package) for MP3/M4A and chip/tracker formats..."; \
	    $(SUDO) apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends ffmpeg; \
	  else \
	    echo "ffmpeg not found: install it (e.g. brew install ffmpeg) for chip/tracker formats."; \
	  fi; }

# For the tests: headless Chromium for the browser test (Playwright's own browser download does
# not work everywhere), and FluidSynth with a small General MIDI SoundFont for the SoundFont
# tests. All from Debian.
test-deps:
	@missing=""; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v fluidsynth >/dev/null 2>&1 || missing="$$missing fluidsynth"; \
	ls /usr/share/sounds/sf2/*.sf2 >/dev/null 2>&1 || missing="$$missing timgm6mb-soundfont"; \
	if [ -n "$$missing" ]; then \
	  if command -v apt-get >/dev/null 2>&1; then \
	    echo "Installing$$missing (Debian packages) for the tests..."; \
	    $(SUDO) apt-get update -q && \
	    $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  else \
	    echo "Please install:$$missing (or set NEUROCHIP_CHROMIUM / NEUROCHIP_SOUNDFONT)."; \
	  fi; \
	fi

$(VENV)/.installed: requirements.txt pyproject.toml tools/basic_pitch_wheel.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -r requirements.txt
	# basic-pitch without TensorFlow (see BASIC_PITCH_WHEEL); requirements.txt pins what it needs.
	$(BIN)/python tools/basic_pitch_wheel.py $(VENV)/wheels  # downloads only the first time
	$(BIN)/python -m pip install -q "$(BASIC_PITCH_WHEEL)"
	$(BIN)/python -m pip install -q --no-deps -e .
	$(BIN)/python -m pip check  # requirements.txt must pin all that pyproject.toml declares
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	$(BIN)/python -m pip check
	touch $@

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache *.egg-info
