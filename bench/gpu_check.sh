#!/usr/bin/env bash
# The whole GPU check in one call on a bare GPU machine: install the carried wheels (.whl/, made here by
# `bash bench/fetch_gpu_wheels.sh`), build the extension for this GPU's architecture, then run every stage of
# `python -m bench.gpu_check` inside what is left of the time budget. Results under $OUT (default ./gpu_check_out):
# gpu_check.json, gpu_check.md, gpu_check.log and setup.log.
#   bash bench/gpu_check.sh                 # on the GPU machine (see DEVELOPERS.md for the device call)
#   bash bench/gpu_check.sh --dry           # CPU: toy sizes (CI); the extension is built only if missing
# GPU_CHECK_TOTAL_S: seconds for the whole script (default 480, dry 1500); the stages get what install and build
# left, less 20 s. Extra arguments go to python -m bench.gpu_check (e.g. --stage kernels --stage train_seed).
# Exit code: 0 every stage ok, 1 some stage failed (see gpu_check.md), 2 the set-up itself failed.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$SECONDS
DRY=0
for arg in "$@"; do [ "$arg" = "--dry" ] && DRY=1; done
TOTAL=${GPU_CHECK_TOTAL_S:-$([ "$DRY" = 1 ] && echo 1500 || echo 480)}
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
: > "$OUT/setup.log"

# 1. The carried wheels, into their own folder (the image's site-packages stay untouched).
WHEELS="none carried (.whl/ is empty or missing)"
if compgen -G ".whl/*.whl" > /dev/null; then
  SITE=${GPU_CHECK_SITE:-/tmp/hrm_fast_site}
  T=$SECONDS
  if ! "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      .whl/*.whl >> "$OUT/setup.log" 2>&1; then
    echo "error: installing .whl/*.whl failed (see $OUT/setup.log)" >&2
    tail -20 "$OUT/setup.log" >&2
    exit 2
  fi
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
  WHEELS="$(find .whl -maxdepth 1 -type f -name '*.whl' | wc -l) wheels in $((SECONDS - T)) s"
fi
echo "wheels: $WHEELS"

# 2. The extension, for this GPU's architecture (all of its CUDA kernels, or a clear failure in setup.log).
if [ "$DRY" = 1 ] && "$PY" -c "import torch, hrm_fast._C" 2> /dev/null; then
  BUILD="skipped (dry run: hrm_fast._C is already built)"
else
  ARCH=$("$PY" -c "import torch; c = torch.cuda.get_device_capability() if torch.cuda.is_available() else None; \
print(f'{c[0]}.{c[1]}' if c else '')" 2>> "$OUT/setup.log")
  T=$SECONDS
  if [ -n "$ARCH" ]; then
    export TORCH_CUDA_ARCH_LIST="$ARCH" HRM_FAST_FORCE_CUDA=1
  fi
  if MAX_JOBS=${MAX_JOBS:-$(nproc)} "$PY" -m pip install --no-index --no-deps --no-build-isolation -e . \
      >> "$OUT/setup.log" 2>&1; then
    BUILD="ok in $((SECONDS - T)) s (TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-setup.py default})"
  else
    BUILD="FAILED after $((SECONDS - T)) s (see setup.log); the stages run on without the extension"
    tail -30 "$OUT/setup.log"
  fi
fi
echo "build: $BUILD"

# 3. The stages, in what is left of the budget.
LEFT=$((TOTAL - (SECONDS - START) - 20))
SETUP_JSON=$(mktemp /tmp/gpu_check_setup.XXXXXX)
WHEELS="$WHEELS" BUILD="$BUILD" SETUP_S=$((SECONDS - START)) "$PY" -c 'import json, os, sys
json.dump({"wheels": os.environ["WHEELS"], "build": os.environ["BUILD"], "setup_s": int(os.environ["SETUP_S"])},
          open(sys.argv[1], "w"))' "$SETUP_JSON"
"$PY" -m bench.gpu_check --out "$OUT" --budget "$LEFT" --setup "$SETUP_JSON" "$@"
RC=$?
rm -f "$SETUP_JSON"
echo "gpu_check.sh: exit $RC after $((SECONDS - START)) s; results in $OUT"
exit $RC
