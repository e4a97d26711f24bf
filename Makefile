# Two commands, set-up included: `make test` and `make bench`.
# On CPU-only machines torch is pinned to the 2.13.0 CPU build (a plain `torch` would pull
# several GB of CUDA packages); override with `make TORCH_SPEC=torch test` on a GPU machine.
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
# torchvision matching TORCH_SPEC, installed with --no-deps so it cannot replace the pinned torch.
TORCHVISION_SPEC ?= torchvision==0.28.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test bench demo compile-check clean

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)"
	$(BIN)/python -m pip install --quiet --no-deps "$(TORCHVISION_SPEC)"
	$(BIN)/python -m pip install --quiet -e ".[test,bench]"
	touch $(STAMP)

# Test files run on parallel workers (pytest-xdist; one file stays on one worker, so its module
# fixtures, such as the sm_90 compile check, run once): about half the time on 2 cores.
PYTEST_WORKERS ?= auto

test: $(STAMP)
	$(BIN)/python -m pytest -q --durations=15 -n $(PYTEST_WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCH_ARGS)

# The fine-tuning demo; without a GPU it runs on Triton's CPU interpreter.
demo: $(STAMP)
	TRITON_INTERPRET=$$($(BIN)/python -c "import torch; print(0 if torch.cuda.is_available() else 1)") \
		$(BIN)/python -m cnn.finetune $(DEMO_ARGS)

compile-check: $(STAMP)
	env -u TRITON_INTERPRET $(BIN)/python -m kernels.sm90.compile_check

clean:
	rm -rf $(VENV) .pytest_cache
