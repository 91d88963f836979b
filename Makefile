# Res-MTNet Serve. Every target creates and fills its own virtual environment (.venv) first.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_VERSION := 2.13.0
DATA ?= ../shared/datasets
# onnxruntime-gpu where an NVIDIA driver is present, the CPU build elsewhere.
RUNTIME ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo gpu || echo cpu)
# make train writes a new version folder, never an existing one (OVERWRITE=1 replaces it). Unless MODEL_VERSION names
# one (e.g. 1.3.0), a pre-release stamped with the UTC time: it sorts below every release, so the service keeps serving
# the newest release until RESMTNET_MODEL_VERSION pins the new model.
ifndef MODEL_VERSION
MODEL_VERSION := 0.0.0-dev.$(shell date -u +%Y%m%d%H%M%S)
endif
EXPORT_FLAGS = $(if $(filter 1 yes true,$(OVERWRITE)),--overwrite)
# The committed default model's recipe (the same numbers only on the same CPU family and thread count: README, Training).
TRAIN_ARGS ?= --epochs 18 --malignancy-weight 0.5 --malignancy-smoothing 0.1 --max-shift 1 \
	--weight-decay 5e-4 --lidc-repeats 2

# $(call apt_tool,command,debian package): install the package when the command is missing, as root or with
# passwordless sudo; an install that fails stops make. Only where neither is possible do the tests needing it skip.
define apt_tool
command -v $(1) >/dev/null 2>&1 || { \
  if [ "$$(id -u)" = 0 ]; then sudo=; elif sudo -n true 2>/dev/null; then sudo=sudo; else sudo=no; fi; \
  if [ "$$sudo" = no ] || ! command -v apt-get >/dev/null 2>&1; then \
    echo "$(1) is missing and cannot be installed here (needs apt-get and root): its tests will skip"; \
  else \
    echo "installing $(1): apt-get install $(2)"; \
    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends $(2) >/dev/null && command -v $(1) >/dev/null; \
  fi; }
endef

.PHONY: run test train bench bench-cuda bench-dicom soak lint clean promtool dcmtk constraints

$(VENV)/bin/python:
	@$(PYTHON) -c "import sys; sys.exit(sys.version_info < (3, 11))" 2>/dev/null || { \
	  echo "Python 3.11 or newer is needed; $(PYTHON) is" \
	  "$$(command -v $(PYTHON) >/dev/null && $(PYTHON) --version 2>&1 || echo not installed). Install it (Debian/Ubuntu:" \
	  "python3.11 and python3.11-venv) and run: make $(MAKECMDGOALS) PYTHON=python3.11"; exit 1; }
	$(PYTHON) -m venv $(VENV) && $(PIP) install --quiet --upgrade pip || { rm -rf $(VENV); exit 1; }

# Serving: no torch. Every install takes the tested versions in constraints.txt.
$(VENV)/.serve-$(RUNTIME): pyproject.toml constraints.txt constraints-gpu.txt | $(VENV)/bin/python
	$(PIP) install --quiet -c constraints.txt -c constraints-gpu.txt -e ".[$(RUNTIME)]"
	touch $@

# Tests and training: torch pinned, installed before the extras. PyPI's Linux torch wheels bring the CUDA libraries
# (several GB); PyTorch's own CPU index has the CPU build (torch 2.13.0+cpu), taken whenever it is reachable.
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
TORCH_INDEX_ARGS = $(shell $(PYTHON) -c "import urllib.request as u; u.urlopen('$(TORCH_CPU_INDEX)/torch/', timeout=5)" \
	2>/dev/null && echo --extra-index-url $(TORCH_CPU_INDEX))
$(VENV)/.dev: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(PIP) install --quiet $(TORCH_INDEX_ARGS) "torch==$(TORCH_VERSION)"
	$(PIP) install --quiet -c constraints.txt -e ".[cpu,train,dev,bench]"
	touch $@

run: $(VENV)/.serve-$(RUNTIME)
	$(PY) -m service

test: $(VENV)/.dev promtool dcmtk
	$(PY) -m pytest

# promtool (Debian's prometheus package) checks deploy/prometheus in the tests.
promtool:
	@$(call apt_tool,promtool,prometheus)

# dcmtk's dsrdump checks the DICOM SR answers in the tests (tests/service/dicom/test_structured_report.py).
dcmtk:
	@$(call apt_tool,dsrdump,dcmtk)

lint: $(VENV)/.dev
	$(PY) -m ruff check service training tests bench tools
	$(PY) -m ruff format --check service training tests bench tools
	$(PY) -m mypy service

# Train, evaluate on held-out data, export to model_store/res_mtnet/$(MODEL_VERSION). 45 to 60 minutes on 2 CPU cores.
# The version is checked first, so a refused one costs seconds, not a training run.
train: $(VENV)/.dev
	$(PY) -m training.export --check-only --version $(MODEL_VERSION) $(EXPORT_FLAGS)
	$(PY) -m training.train --data-root $(DATA) --out checkpoints $(TRAIN_ARGS)
	$(PY) -m training.evaluate --checkpoint checkpoints/last.pt --data-root $(DATA) \
		--out checkpoints/evaluation.json --real-inputs-out checkpoints/real_inputs.npy
	$(PY) -m training.export --checkpoint checkpoints/last.pt --version $(MODEL_VERSION) $(EXPORT_FLAGS) \
		--evaluation checkpoints/evaluation.json --real-inputs checkpoints/real_inputs.npy

# Service vs onnxruntime in-process, a per-request FastAPI baseline and LitServe, concurrency 1..32;
# writes bench/results/serve-latest.{md,csv,png}.
bench: $(VENV)/.dev
	$(PY) -m bench.serve

# The same sweep on CUDA, on a GPU node: its own environment with onnxruntime-gpu (no torch, no CPU onnxruntime);
# concurrency 1..128, batches up to 64; writes bench/results/serve-latest-cuda.{md,csv,png}.
GPU_VENV ?= .venv-gpu
$(GPU_VENV)/.bench: pyproject.toml constraints.txt constraints-gpu.txt
	$(PYTHON) -m venv $(GPU_VENV)
	$(GPU_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(GPU_VENV)/bin/python -m pip install --quiet -c constraints.txt -c constraints-gpu.txt -e ".[gpu,bench]"
	touch $@

bench-cuda: $(GPU_VENV)/.bench
	$(GPU_VENV)/bin/python -m bench.serve --provider cuda

# CT upload: a 300-slice 512 x 512 series with one nodule, upload-to-answer through the real server vs SimpleITK reading
# it; writes bench/results/dicom-latest.md.
bench-dicom: $(VENV)/.dev
	$(PY) -m bench.dicom

# Ten minutes of mixed requests (patches, JSON, CT uploads, bad inputs): 5xx count and resident memory.
soak: $(VENV)/.dev
	$(PY) -m bench.soak

# Re-pin constraints.txt to the newest versions pyproject.toml's ranges admit, resolved in a fresh environment, and
# constraints-gpu.txt to what the GPU install adds (resolved without downloading it); run make clean test before
# committing the result.
LOCK_VENV := build/lock-venv
constraints:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install --quiet $(TORCH_INDEX_ARGS) "torch==$(TORCH_VERSION)"
	$(LOCK_VENV)/bin/python -m pip install --quiet ".[cpu,train,dev,bench]"
	{ sed -n '1,3p' constraints.txt; $(LOCK_VENV)/bin/python -m pip freeze --exclude-editable \
		| grep -v -i -e '^torch==' -e '^resmtnet-serve'; } > constraints.txt.new
	mv constraints.txt.new constraints.txt
	$(LOCK_VENV)/bin/python -m pip install --quiet --dry-run --ignore-installed --report build/gpu-report.json \
		-c constraints.txt ".[gpu]"
	$(LOCK_VENV)/bin/python tools/pin_gpu.py build/gpu-report.json
	rm -rf $(LOCK_VENV) build/gpu-report.json

clean:
	rm -rf $(VENV) $(GPU_VENV) .cache .pytest_cache .ruff_cache .mypy_cache
