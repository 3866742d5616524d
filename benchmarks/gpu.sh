#!/usr/bin/env bash
# GPU (CUDA) benchmark of rsabench, in one command, within 8 minutes of wall time (install included).
#
#   bash benchmarks/gpu.sh [--compile] [other benchmarks/gpu_bench.py options]   # on a machine with a CUDA GPU
#   bash benchmarks/gpu.sh --cpu-smoke                                           # the same code path, tiny, on CPU
#
# Needs no virtual environment: it picks a python3 whose torch sees CUDA ($PYTHON, else python3, else
# ./.venv/bin/python), makes a venv on top of it (python3 -m venv --without-pip, plus a .pth to the chosen
# interpreter's site-packages, so its torch, numpy, ... are reused: nothing is downloaded; the machine may be
# offline), installs rsabench there with `pip install -e . --no-deps --no-build-isolation` (with ./.whl/ wheels
# present: `--no-index --find-links .whl` and dependencies), and falls back to PYTHONPATH=<repo root> when any of
# that fails (rsabench's library path needs only torch, torchvision, numpy, scipy).
# Then it runs benchmarks/gpu_bench.py: human-readable lines on stdout, all figures in $OUT/gpu-bench.json when
# $OUT is set, else ./gpu-bench.json (and a copy of the log beside it as gpu-bench.log).
#
# Environment: PYTHON (interpreter to use), GPU_BENCH_BUDGET_S (total seconds, default 480; --cpu-smoke: 120),
# GPU_BENCH_VENV (venv folder, default ${TMPDIR:-/tmp}/rsabench-gpu-venv), GPU_BENCH_NO_INSTALL=1 (skip the venv).
set -euo pipefail

START=$(date +%s)
SMOKE=0
for arg in "$@"; do
    if [[ "$arg" == "--cpu-smoke" ]]; then SMOKE=1; fi
done
if [[ $SMOKE == 1 ]]; then BUDGET_S=${GPU_BENCH_BUDGET_S:-120}; else BUDGET_S=${GPU_BENCH_BUDGET_S:-480}; fi
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

elapsed() { echo $(($(date +%s) - START)); }
log() { echo "[gpu.sh +$(elapsed)s] $*"; }
part_done() { log "part $1: $(($(date +%s) - $2)) s"; }

if [[ -n "${OUT:-}" ]]; then JSON="$OUT/gpu-bench.json"; else JSON="$ROOT/gpu-bench.json"; fi
LOG="${JSON%.json}.log"
mkdir -p "$(dirname "$JSON")"
exec > >(tee "$LOG") 2>&1

log "rsabench GPU benchmark: budget ${BUDGET_S} s in all; repository $ROOT; mode $([[ $SMOKE == 1 ]] && echo cpu-smoke || echo cuda)"
if command -v nvidia-smi >/dev/null 2>&1; then
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader 2>/dev/null || true
fi

# -- 1. an interpreter with torch (and CUDA unless --cpu-smoke) -------------------------------------------
T=$(date +%s)
if [[ $SMOKE == 1 ]]; then CHECK="import torch"; else CHECK="import torch, sys; sys.exit(0 if torch.cuda.is_available() else 3)"; fi
BASE=""
for cand in "${PYTHON:-}" python3 "$ROOT/.venv/bin/python"; do
    [[ -n "$cand" ]] || continue
    command -v "$cand" >/dev/null 2>&1 || continue
    if timeout 120 "$cand" -c "$CHECK" >/dev/null 2>&1; then BASE=$(command -v "$cand"); break; fi
    log "$cand: no usable torch$([[ $SMOKE == 1 ]] || echo ' with a visible CUDA device')"
done
if [[ -z "$BASE" ]]; then
    if [[ $SMOKE == 1 ]]; then
        echo "error: no python with torch found (tried \$PYTHON, python3, .venv/bin/python)" >&2
    else
        echo "error: no CUDA device visible: no python (\$PYTHON, python3, .venv/bin/python) has a torch with" \
            "torch.cuda.is_available() true; check nvidia-smi and CUDA_VISIBLE_DEVICES, or run with --cpu-smoke" >&2
    fi
    exit 2
fi
log "interpreter: $BASE ($("$BASE" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, CUDA {torch.version.cuda}")'))"

# -- 2. a venv on top of it, rsabench installed editable; else PYTHONPATH ------------------------------
PY="$BASE"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"  # the source tree first, however rsabench is installed
if [[ "${GPU_BENCH_NO_INSTALL:-0}" != 1 ]]; then
    VENV=${GPU_BENCH_VENV:-${TMPDIR:-/tmp}/rsabench-gpu-venv}
    if timeout 60 "$BASE" -m venv --clear --without-pip --system-site-packages "$VENV"; then
        SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
        # the chosen interpreter's own site-packages (it may itself be a venv, which --system-site-packages skips)
        "$BASE" -c 'import sys
for p in sys.path:
    if p.endswith(("site-packages", "dist-packages")):
        print(f"import site; site.addsitedir({p!r})")' >"$SITE/_rsabench_base_site.pth"
        if [[ -d "$ROOT/.whl" ]]; then
            PIP_ARGS=(--no-index --find-links "$ROOT/.whl")
        else
            PIP_ARGS=(--no-index --no-deps)
        fi
        if timeout 120 "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-build-isolation \
            "${PIP_ARGS[@]}" -e "$ROOT" >"$VENV/pip.log" 2>&1; then
            PY="$VENV/bin/python"
            log "installed rsabench (editable) into $VENV"
        else
            log "pip install -e . failed (tail of $VENV/pip.log below); using $BASE with PYTHONPATH=$ROOT"
            tail -n 5 "$VENV/pip.log" || true
        fi
    else
        log "python -m venv failed; using $BASE with PYTHONPATH=$ROOT"
    fi
fi
if ! timeout 120 "$PY" -c "import rsabench.training, rsabench.features, rsabench.scoring, torchvision, scipy" 2>&1; then
    echo "error: rsabench's training/scoring modules do not import with $PY (see above)" >&2
    exit 2
fi
part_done "setup (interpreter, venv, install)" "$T"

# -- 3. the measurements, in what is left of the budget -----------------------------------------------
LEFT=$((BUDGET_S - $(elapsed) - 15)) # 15 s for the interpreter's start and exit, and this script's end
if ((LEFT < 30)); then
    log "SKIP all measurements: budget nearly spent (${LEFT} s left after setup)"
    exit 1
fi
T=$(date +%s)
log "running benchmarks/gpu_bench.py with a budget of ${LEFT} s"
set +e
PYTHONUNBUFFERED=1 timeout --signal=TERM --kill-after=10 $((LEFT + 10)) \
    "$PY" "$ROOT/benchmarks/gpu_bench.py" --budget-s "$LEFT" --json "$JSON" "$@"
RC=$?
set -e
part_done "measurements" "$T"
if ((RC == 124 || RC == 137)); then log "gpu_bench.py stopped at the time limit; figures measured so far are in $JSON"; fi
log "total $(elapsed) s (budget ${BUDGET_S} s); exit $RC; JSON $JSON; log $LOG"
exit $RC
