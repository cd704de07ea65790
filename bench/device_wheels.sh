#!/usr/bin/env bash
# Wheels of the dependencies the GPU image lacks (math-verify and its parser for rewards; the server's fastapi and
# uvicorn and the openai client for the serving and eval benches), for a machine without network: download here,
# carry `.whl` to the device, install there into /tmp/site.
#
#   bench/device_wheels.sh                      # here: writes .whl/ (git-ignored)
#   # on the device (carry [".whl"]):
#   python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD
#
# Without them every math reward fails on that machine; `openmimo rl` and bench/bench_rollout_engine.py
# refuse to start (openmimo.rewards.math.require_math_verify).  sympy is already in the image.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  math-verify==0.9.0 latex2sympy2_extended==1.11.0 antlr4-python3-runtime==4.13.2
python3 -m pip download -q --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
  fastapi uvicorn openai
ls -l .whl
