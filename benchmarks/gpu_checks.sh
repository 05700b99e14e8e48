#!/usr/bin/env bash
# The language-model driver's GPU checks, as one short run (a few minutes on one GPU):
#   1. the single-process NLHFTrainer tests on CUDA — EGPO against the hand-written AdamW replay
#      (with gradient accumulation and a partial window), every algorithm, kill-and-resume;
#   2. benchmarks/bench_lm.py on CUDA (seconds per update and the breakdown, fp32).
# The CPU tests stay the gate; this records what the GPU path does. Results go to $OUT (default gpu_checks/).
#
#   PYTHON=.venv/bin/python OUT=gpu_checks bash benchmarks/gpu_checks.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}
OUT=${OUT:-gpu_checks}
mkdir -p "$OUT"
"$PYTHON" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0), torch.__version__)" | tee "$OUT/device.txt"
EGPO_TEST_DEVICE=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_nlhf_trainer.py \
    -k "extragradient or egpo_update or every_algorithm or resume or regression_on_the_rollout" 2>&1 | tee "$OUT/pytest_cuda.txt"
"$PYTHON" benchmarks/bench_lm.py --device cuda --threads 0 --json "$OUT/bench_lm_cuda.json" 2>&1 | tee "$OUT/bench_lm_cuda.txt"
