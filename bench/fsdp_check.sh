#!/usr/bin/env bash
# FSDP2 on N GPUs vs one GPU: the same global batch must give the same loss curve.
#   bash bench/fsdp_check.sh [NPROC] [DTYPE]      (defaults: 2 float32)
# Prints per-step loss of both runs and the largest difference.
set -euo pipefail
N=${1:-2}; DT=${2:-float32}
export PYTHONPATH=$PWD
D=$(mktemp -d)
python - "$D" <<'PY'
import sys
from pathlib import Path
from openmimo.config import load
from openmimo.train.config import PretrainConfig
from openmimo.train.data import prepare_world
prepare_world(load(PretrainConfig, None, ["data.world_scale=0.2", "data.tokenizer_vocab=1024"]), Path(sys.argv[1]))
PY
SRC="{web: $D/shards/web, math: $D/shards/math, code: $D/shards/code, reasoning: $D/shards/reasoning}"
ARGS=(model.hidden_size=512 model.intermediate_size=1536 model.num_hidden_layers=4 model.num_attention_heads=8
  model.num_key_value_heads=2 model.max_position_embeddings=512 model.num_nextn_predict_layers=1
  "data.sources=$SRC" data.tokenizer=$D/tokenizer data.world=false
  "stages=[{name: a, tokens: 100000, seq_len: 256, rope_theta: 10000.0, mixture: {web: 0.3, math: 0.7}}]"
  batch.batch_size=16 batch.micro_batch_size=4 batch.warmup_batch_size=0 optim.warmup_tokens=4000
  train.max_steps=8 train.ckpt_every=0 train.eval_problems=0 train.device=cuda train.dtype=$DT train.log_every=1)
python -m openmimo.cli pretrain "${ARGS[@]}" train.out_dir=$D/one 2>&1 | grep "\[pretrain\]"
torchrun --nproc-per-node "$N" -m openmimo.cli pretrain "${ARGS[@]}" train.out_dir=$D/many 2>&1 | grep "\[pretrain\]"
python - "$D" <<'PY'
import json, sys
d = sys.argv[1]
def curve(r):
    return [(x["step"], x["loss"], x["mtp1_loss"], x["step_time_s"]) for x in map(json.loads, open(f"{d}/{r}/metrics.jsonl")) if "loss" in x]
a, b = curve("one"), curve("many")
print("| step | loss 1 GPU | loss N GPUs | abs diff | MTP loss diff | step s (1) | step s (N) |\n|---|---|---|---|---|---|---|")
for (s, l1, m1, t1), (_, l2, m2, t2) in zip(a, b):
    print(f"| {s} | {l1:.7f} | {l2:.7f} | {abs(l1 - l2):.2e} | {abs(m1 - m2):.2e} | {t1:.3f} | {t2:.3f} |")
print("max abs loss diff:", max(abs(x[1] - y[1]) for x, y in zip(a, b)))
PY
