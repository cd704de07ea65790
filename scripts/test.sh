#!/usr/bin/env bash
# The README's test command (and CI's): set up, run the whole suite, then run the engine and training tests
# again under every other ATen CPU kernel path this CPU offers (ATEN_CPU_CAPABILITY=default|avx2|avx512):
# their rounding differs between kernel paths, and a test must hold on all of them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh dev
python3 -m pytest -q tests
KERNEL_TESTS="tests/test_engine.py tests/test_engine_fast.py tests/test_speculative.py tests/test_model.py
  tests/test_pretrain.py tests/test_schedule_loop.py tests/test_rl_trainer.py tests/test_rl_rollout.py
  tests/test_mtp_reference.py tests/test_server_logprobs.py tests/test_engine_forward.py"
for cap in $(python3 scripts/cpu_kernel_paths.py --others); do
  echo "== ATEN_CPU_CAPABILITY=$cap: engine and training tests"
  ATEN_CPU_CAPABILITY=$cap python3 -m pytest -q $KERNEL_TESTS
done
