#!/usr/bin/env bash
# The GPU measurements quoted in the README, as run on a lent accelerator machine whose
# Python already has jax[cuda], flax, optax and orbax (but no e3nn-jax, ml-collections,
# tensorboardX or qm9pack). Carried alongside the repo:
#   .whl/  wheels of e3nn-jax, ml-collections, tensorboardX (pip download --no-deps)
#   .gpu/  qm9_v1.npz, the converted QM9 cache (so qm9pack is not needed there)
# Writes bench_gpu.json, pipeline_gpu.json, comparison.json and versus_<layout>_<dtype>.json
# into $OUT (default: ./gpu_results).
set -uo pipefail
OUT=${OUT:-gpu_results}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 MOLSPECTRA_CACHE=$PWD/.gpu
# Fine-tuning runs of one shape reuse each other's compiled executables.
export JAX_COMPILATION_CACHE_DIR=/tmp/jax_cache JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
python3 -c "import jax; print(jax.__version__, jax.devices())"
STAGE1=${STAGE1:-4000} STAGE2=${STAGE2:-2000} FINETUNE=${FINETUNE:-2000}
python3 -m benchmarks.pretraining_benefit --workdir /tmp/compare \
  --stage1_steps "$STAGE1" --stage2_steps "$STAGE2" --finetune_steps "$FINETUNE" 2>&1 \
  | grep -v -E "^[IW][0-9]{4} " | tr '\r' '\n' | grep -v -E "^(pre-train|fine-tune)" | tail -60
cp /tmp/compare/comparison.json "$OUT/comparison.json"
# Input pipeline: worker counts on a many-core host, and the 3.4M-molecule start.
python3 -m benchmarks.input_pipeline --workers 0,2,4,8 --batches 300 \
  --synthetic_dir /tmp/synthetic --out "$OUT/pipeline_gpu.json" 2>&1 \
  | grep -v -E "^[IW][0-9]{4} " | tail -3
python3 -m benchmarks.train_step --configs small,paper --steps 30 --batch_size 128 \
  --dtypes float32,bfloat16 --layouts sparse,dense \
  --out "$OUT/bench_gpu.json" 2>&1 | grep -v -E "^[IW][0-9]{4} " | tail -30
# The speed comparison's JAX side (torch is not installed here), both layouts, fp32/bf16.
for layout in sparse dense; do for dtype in float32 bfloat16; do
  python3 -m benchmarks.versus_torchmdnet --impls molspectra-jax --threads "$(nproc)" \
    --model=layout=$layout --model=dtype=$dtype --out "$OUT/versus_${layout}_${dtype}.json" \
    2>&1 | grep "^|"
done; done
