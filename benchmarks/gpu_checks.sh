#!/usr/bin/env bash
# The GPU checks of the scaling issue (#15) as one prepared script, for a session whose task is lent a GPU
# machine (the device tool: `status` says whether, at no cost). Nothing here has run on a GPU yet.
#
# 1. Here, on the development machine, once per checkout (wheels the GPU machine lacks, and the official code
#    for the side-by-side step; both ignored by git, never committed):
#        bash benchmarks/gpu_checks.sh prepare /path/to/a/checkout/of/ShihuaHuang95/DEIM
#    (a bare git directory, as the fetch tool gives, works too).
# 2. On the GPU machine, in one device `run` with carry [".whl", ".official"] and timeout_s 600:
#        bash benchmarks/gpu_checks.sh
#    which runs the steps `env tests throughput official matching` (about 6-8 minutes, not measured yet), or
#    name steps: `bash benchmarks/gpu_checks.sh throughput bench compile`. Each step has its own time limit
#    and a failed step does not stop the others; logs and the updated benchmarks/RESULTS.md land in $OUT.
# 3. Back here: copy $OUT/RESULTS.md's new sections into benchmarks/RESULTS.md (their scripts wrote them) and put
#    the figures into the README and lesson 12, replacing "not measured".
#
# GPU_CHECKS_DEVICE=cpu runs every step at toy sizes without writing RESULTS.md: a check of this script's
# plumbing on a machine without a GPU (tests/test_benchmarks.py does that).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu_checks}
DEVICE=${GPU_CHECKS_DEVICE:-cuda}
mkdir -p "$OUT"
PY=${PY:-python3}

prepare() {
    local official=${1:?"usage: gpu_checks.sh prepare PATH_TO_DEIM (a checkout or a bare git directory)"}
    for d in /.whl/ /.official/; do grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >> .git/info/exclude; done
    rm -rf .whl .official && mkdir -p .whl .official/DEIM
    # the GPU machine's Python is 3.12 with torch, torchvision, scipy, numpy, tqdm and pillow; these it lacks
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl pycocotools==2.0.11 lapx==0.11.1 faster-coco-eval==1.8.0 || return 1
    if [ -f "$official/engine/deim/__init__.py" ]; then
        cp -r "$official"/. .official/DEIM/
    else
        git --git-dir="$official" archive HEAD | tar -x -C .official/DEIM || return 1
    fi
    rm -rf .official/DEIM/.git
    test -f .official/DEIM/engine/deim/__init__.py && du -sh .whl .official
}

setup() {
    if [ -d .whl ] && [ "$DEVICE" = cuda ]; then
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
            && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
    if [ "$DEVICE" = cuda ]; then WRITE=(--write); NO_WRITE=(); else WRITE=(); NO_WRITE=(--no-write); fi
}

# step NAME SECONDS COMMAND...: run it under a time limit, its output in $OUT/NAME.log, its status in summary.txt
step() {
    local name=$1 limit=$2 start=$SECONDS
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "$name rc=$rc $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
    tail -n 25 "$OUT/$name.log"
}

run_env() {
    { nvidia-smi 2>&1 | head -15; nproc; "$PY" -c "import torch, torchvision, sys; print(sys.version); \
print(torch.__version__, torchvision.__version__, torch.cuda.is_available() and torch.cuda.get_device_name(0))"; \
"$PY" -c "import pycocotools, lap, minidetr; print('pycocotools, lap, minidetr import')"; } > "$OUT/env.txt" 2>&1
    cat "$OUT/env.txt"
}

run_tests() {  # the suite's CUDA variants, skipped on a machine without a GPU
    step tests 240 "$PY" -m pytest -q -p no:nbval -p no:cacheprovider -o addopts="" -rs \
        tests/test_mixed_precision.py tests/test_train_rtdetr.py tests/test_loader_persistent.py
}

run_throughput() {  # deim_r50 at 640 px, the real loader (mosaic on, 4 persistent workers), batch 16
    if [ "$DEVICE" = cuda ]; then
        step throughput 300 "$PY" benchmarks/train_throughput.py --preset deim_r50 --device cuda --batch-size 16 \
            --steps 20 --warmup 5
    else
        step throughput 300 "$PY" benchmarks/train_throughput.py --preset deim_r50 --device cpu --batch-size 2 \
            --steps 1 --warmup 1 --no-write --set data.image_size=160 num_workers=1
    fi
}

run_official() {  # the same deim_r50 step by the official DEIM code, alternating, same batches: the ratio
    if [ ! -d .official/DEIM ]; then echo "official: no .official/DEIM (run the prepare step here first)" | tee -a "$OUT/summary.txt"; return; fi
    if [ "$DEVICE" = cuda ]; then
        step official 240 "$PY" benchmarks/official_step.py --official .official/DEIM --size r50 --device cuda \
            --batch-size 16 --steps 20 --write
    else
        step official 240 "$PY" benchmarks/official_step.py --official .official/DEIM --size tiny --device cpu \
            --batch-size 2 --steps 1 --warmup 1
    fi
}

run_matching() {  # costs on the GPU, one copy per step, the solves on the host: batch 32, 300 queries
    if [ "$DEVICE" = cuda ]; then
        step matching 150 "$PY" benchmarks/matching_cost.py --device cuda --write
    else
        step matching 150 "$PY" benchmarks/matching_cost.py --device cpu --batch-size 4 --queries 30 --repeats 1
    fi
}

run_bench() {  # the model, criterion and optimiser alone (no data loading), bf16, loss going down
    if [ "$DEVICE" = cuda ]; then
        step bench 240 "$PY" benchmarks/bench_deim_r50_gpu.py --iters 100 --batch-size 16
    else
        step bench 240 "$PY" benchmarks/bench_deim_r50_gpu.py --device cpu --iters 2 --warmup 1 --size 160 \
            --batch-size 2 --results "$OUT/RESULTS-dry.md"
    fi
}

run_compile() {  # the same with --compile (inductor): compile time counts as warm-up
    if [ "$DEVICE" = cuda ]; then
        step compile 300 "$PY" benchmarks/bench_deim_r50_gpu.py --iters 60 --batch-size 16 --compile
    else
        echo "compile: CUDA only (inductor takes minutes on a small CPU)" | tee -a "$OUT/summary.txt"
    fi
}

if [ "${1:-}" = prepare ]; then
    shift
    prepare "$@"
    exit
fi
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env tests throughput official matching)
setup
: > "$OUT/summary.txt"
for s in "${steps[@]}"; do
    case $s in
        env | tests | throughput | official | matching | bench | compile) "run_$s" ;;
        *) echo "unknown step '$s': env tests throughput official matching bench compile" >&2; exit 2 ;;
    esac
done
cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
git diff --no-color -- benchmarks/RESULTS.md > "$OUT/RESULTS.diff" 2>/dev/null || true
echo "== done"; cat "$OUT/summary.txt"
