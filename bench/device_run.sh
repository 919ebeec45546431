#!/usr/bin/env bash
# One prepared run on a lent GPU machine (NVIDIA H200, 16 cores): the uncapped brain long stream of issue 7
# (the variants of configs/bench/long_stream_brain.yaml, one process per variant, all on the GPU; the
# unguarded run also in a second stream order). Results come back as $OUT/streams.tar.gz.
# `bench/device_run.sh latency` measures the click latency on CUDA instead (issue 6): $OUT/latency.tar.gz.
#
# It expects, beside the working tree (see bench/README.md "Long streams on a GPU machine"):
#   .whl/      wheels of the packages the machine's image lacks (monai, nibabel, pydantic, …) for Python 3.12
#   .devdata/cache/  the sample caches of the brain long stream (made here by a CPU run of the benchmark)
#   .devdata/data/   BRATS test and RIM-ONE r1 test files for the latency streams
# and that the caches were made with CLICKADAPT_DATA_ROOT resolving to $CACHE_DATA_ROOT (their key holds it).
set -u
OUT=${OUT:-/tmp/device-out}
CACHE_DATA_ROOT=${CACHE_DATA_ROOT:-/work/shared/data}
STREAM_TIMEOUT=${STREAM_TIMEOUT:-470}
LATENCY_TIMEOUT=${LATENCY_TIMEOUT:-150}
export PYTHONUNBUFFERED=1
# One CPU thread per process: the 2026-11-30 run left these unset, and nine processes of 16 threads each on
# 16 cores did not finish one adapting stream in 470 s (untested since: time one process before many).
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
mkdir -p "$OUT/logs"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD/src:$PWD/bench
export CLICKADAPT_DATA_ROOT=$CACHE_DATA_ROOT
mkdir -p .cache && ln -sfn "$PWD/.devdata/cache" .cache/clickadapt
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/logs/gpu.txt"
python3 -c "import torch, monai; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'monai', monai.__version__)"

if [ "${1:-streams}" = latency ]; then
    timeout "$LATENCY_TIMEOUT" python3 bench/latency.py --device cuda --no-http --no-tuning --threads 2 \
        --data-root .devdata/data --output bench/results/latency_gpu.md > "$OUT/logs/latency.log" 2>&1
    echo "latency exit $? $(date -u +%T)"
    tar czf "$OUT/latency.tar.gz" bench/results/latency_gpu.* "$OUT/logs"
    exit 0
fi

# smoke: 2 images per segment on CUDA, so that a broken environment fails in seconds, not minutes
timeout 120 python3 -m bench.long_stream configs/bench/long_stream_brain.yaml --device cuda --limit-per-segment 2 \
    --forgetting-limit 2 --no-progress --variants frozen,oaims+safety+rehearsal+sentinel --tag smoke \
    > "$OUT/logs/smoke.log" 2>&1 || { tail -40 "$OUT/logs/smoke.log"; exit 4; }
rm -f bench/results/long_stream_brain-smoke*
echo "smoke ok $(date -u +%T)"

# a second stream order (order_seed 1) for the unguarded run and the rehearsal + sentinel run
sed 's/^order_seed: 0$/order_seed: 1/' configs/bench/long_stream_brain.yaml > configs/bench/long_stream_brain_order1.yaml
run() {  # tag, variants, config
    timeout "$STREAM_TIMEOUT" python3 -m bench.long_stream "${3:-configs/bench/long_stream_brain.yaml}" --device cuda \
        --no-progress --variants "$2" --tag "$1" > "$OUT/logs/$1.log" 2>&1
    echo "$1 exit $? $(date -u +%T)"
}
run gpu frozen,oaims+safety,oaims &
run gpu-sentinel5 frozen,oaims+safety+sentinel5 &
run gpu-combo frozen,oaims+safety+sentinel5+anchor &
run gpu-anchor frozen,oaims+safety+anchor &
run gpu-rehearsal frozen,oaims+safety+rehearsal &
run gpu-rehearsal-sentinel frozen,oaims+safety+rehearsal+sentinel &
run gpu-rehearsal-sentinel-fine frozen,oaims+safety+rehearsal+sentinel-fine &
run gpu-order1 frozen,oaims+safety,oaims configs/bench/long_stream_brain_order1.yaml &
run gpu-order1-rehearsal-sentinel frozen,oaims+safety+rehearsal+sentinel configs/bench/long_stream_brain_order1.yaml &
wait
tar czf "$OUT/streams.tar.gz" bench/results/long_stream_brain-gpu* "$OUT/logs"

ls -la "$OUT"
