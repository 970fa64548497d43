# Set-up is part of every target: a fresh machine needs only `make main` or `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/alexnet
FMNIST := /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz
CHROMIUM := /usr/bin/chromedriver
RUN    ?= runs/fashion-mnist
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

# The main job's two presets. On a CPU the paper network trains on Fashion-MNIST upsampled to 76 px
# with 67-px crops (its smallest input), in bf16 where the CPU has native bf16 (--precision auto),
# else fp32, for as many epochs as fit 590 s with the test evaluation that follows (--time-budget,
# counted from the train command's start, its imports included; --budget-eval-views: planned from
# the step and evaluation times measured before the first epoch; 10 s left for the device check
# below, whose `import torch` alone took 4-10 s on the 2-core CPUs): 9 epochs on the 2-core
# development CPU in bf16, 3 with it held to AVX2, 1 or 2 on an AVX2-only Zen 3, in fp32
# (docs/benchmarks.md). On a GPU it runs at the full 256/227 size, its step replayed from a CUDA
# graph (--cuda-graphs's default): 72 s of training on an H200 against 154 compiled (docs/benchmarks.md).
# Both evaluate as they trained (--precision auto), in one pass that gives the paper's 10-crop
# figure and the center crop's (Caffe's and torchvision's protocol).
CPU_FLAGS ?= --variant paper --resize 76 --crop 67 --time-budget 590 --budget-eval-views 100000 --init kaiming --schedule cosine
GPU_FLAGS ?= --variant paper --resize 256 --crop 227 --epochs 15 --init kaiming --schedule cosine

.PHONY: main test setup data clean

main: $(VENV)/.installed $(FMNIST)
	@if $(PY) -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then \
		flags="$(GPU_FLAGS)"; else flags="$(CPU_FLAGS)"; fi; \
	echo "+ alexnet train --data fashion-mnist $$flags --out $(RUN) --overwrite"; \
	$(CLI) train --data fashion-mnist $$flags --out $(RUN) --overwrite && \
	echo "+ alexnet evaluate $(RUN) --split test --ten-crop --precision auto" && \
	$(CLI) evaluate $(RUN) --split test --ten-crop --precision auto

# Two test processes (pytest-xdist), whole files to each, so that fixtures are built once.
test: setup
	$(PY) -m pytest -q -n 2 --dist loadfile

setup: $(VENV)/.installed-test $(FMNIST) $(CHROMIUM)

# The main job needs the package; the tests also need their extras (ONNX Runtime, scikit-image, ...).
$(VENV)/.installed: pyproject.toml constraints.txt
	[ -x $(PY) ] || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -qq --disable-pip-version-check -c constraints.txt -e .
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed
	$(VENV)/bin/pip install -qq --disable-pip-version-check -c constraints.txt -e '.[test]'
	touch $@

$(FMNIST):
	$(SUDO) apt-get update -qq
	$(SUDO) apt-get install -y -qq dataset-fashion-mnist

# Debian's Chromium and its driver, for the test of alexnet serve's web page in a real browser.
$(CHROMIUM):
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium chromium-driver

clean:
	rm -rf $(VENV) runs
