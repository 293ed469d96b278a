#!/usr/bin/env bash
# GPU check of issue 11 (benchmarks/bench_gpu.py) in two halves.
#
#   bash benchmarks/gpu_check.sh prepare   # here, in the repository root: fills .gpu_data/ (git-ignored,
#                                          # ~32 MB: the OpenFace model folder, 40 LFPW images, their boxes)
#   bash benchmarks/gpu_check.sh run       # on the GPU machine, in its copy of the repository
#
# The GPU machine has python3 with torch, numpy, numba and opencv only; the run needs no package index.
# With the device tool: carry [".gpu_data"], command "bash benchmarks/gpu_check.sh run", timeout_s 420
# (the benchmark starts no run expected to end after --budget 270 s; timeout 350 s caps the whole run).
# Figures go to stdout and, as JSON, to $OUT/bench_gpu.json (or ./bench_gpu.json without $OUT).
# Extra arguments after "run" go to bench_gpu.py (e.g. --quick, --device cpu).
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=.gpu_data
SHARED=${PYCLNF_SHARED_DIR:-../shared}
N_FACES=40

case "${1:-}" in
prepare)
    rm -rf "$DATA"
    mkdir -p "$DATA/images"
    cp -rL "$SHARED/openface-model" "$DATA/openface-model"
    head -n $((N_FACES + 1)) "$SHARED/reference/lfpw-test/boxes.tsv" > "$DATA/boxes.tsv"
    tail -n +2 "$DATA/boxes.tsv" | cut -f1 | while read -r stem; do
        cp "$SHARED/data/300w-lfpw-test/$stem.png" "$DATA/images/"
    done
    du -sh "$DATA"
    size_kb=$(du -sk "$DATA" | cut -f1)
    if [ "$size_kb" -gt $((50 * 1024)) ]; then
        echo "error: $DATA is ${size_kb} KiB, over the 50 MiB the device tool carries" >&2
        exit 1
    fi
    echo "ready: carry [\"$DATA\"], command \"bash benchmarks/gpu_check.sh run\", timeout_s 420"
    ;;
run)
    shift
    if [ ! -f "$DATA/boxes.tsv" ]; then
        echo "error: $DATA is missing; run 'bash benchmarks/gpu_check.sh prepare' first (and carry it)" >&2
        exit 1
    fi
    OUTDIR=${OUT:-.}
    export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH}
    export PYCLNF_MODEL_DIR="$PWD/$DATA/openface-model"
    export PYCLNF_CACHE_DIR="${TMPDIR:-/tmp}/pyclnf-cache"
    nvidia-smi --query-gpu=name,memory.used,memory.total,clocks.sm --format=csv 2>/dev/null || true
    timeout 350 python3 benchmarks/bench_gpu.py --data "$DATA" --json "$OUTDIR/bench_gpu.json" "$@" \
        2>&1 | tee "$OUTDIR/bench_gpu.log"
    ;;
*)
    echo "usage: $0 prepare | run [bench_gpu.py arguments]" >&2
    exit 2
    ;;
esac
