#!/usr/bin/env bash
# GPU acceptance in one command: set-up without network, the CUDA tests, the benchmarks and
# the main job's GPU preset, each stage a JSON summary and a log under OUTDIR.
#
#   benchmarks/gpu_check.sh OUTDIR [profile] [decode] [setup] [tests] [suite] [bench] [main] [cifar]
#                                            # no stage named: all but profile, decode and cifar
#
# profile: benchmarks/gpu_profile.py (where a training step's time goes, per layer and choice,
# compiled and graphed; no compile variant starts after GPU_CHECK_PROFILE_BUDGET seconds, default
# 200: about 3.5-4 minutes on an H200; its files under OUTDIR/profile/); decode:
# benchmarks/decode_overlap.py (whether nvJPEG decoding overlaps the training step, and what
# stops it; about a minute; OUTDIR/decode/decode_overlap.json); setup: packages, GPU,
# data (benchmarks/gpu_env.py); tests: pytest -m gpu; suite: the rest of
# the test suite on this machine in 8 processes (CUDA wherever a test's device is "auto"; not the
# web page's browser test: no Chromium there); bench: alexnet bench
# for both networks (model eager and compiled, decode, loader, end to end from packed JPEGs with
# CPU and GPU decode and from raw packing, the plain baseline, the two-tower split on one
# device); main: the main job's GPU preset (Makefile's GPU_FLAGS, its step replayed from a CUDA graph,
# then GPU_CHECK_MAIN_FLAGS: e.g. "--compile" trains the same run compiled, "--no-cuda-graphs"
# eagerly) and its evaluation; cifar:
# `alexnet reproduce --preset cifar` for GPU_CHECK_CIFAR_S seconds (default 480), resumable: its
# runs stay under runs/gpu-cifar in the repository (kept between calls on a warm machine), so
# calling the stage again continues it; each call copies the report so far to OUTDIR/cifar/.
# The data: $GPU_CHECK_CIFAR_DATA (a folder), else the archive .cifar/cifar10-jpeg.tar.gz in the
# repository (copy ../shared/data/cifar10-jpeg.tar.gz there and carry .cifar), else
# ../shared/data/cifar10-jpeg.tar.gz, unpacked into the scratch folder.
#   benchmarks/gpu_check.sh --smoke OUTDIR                          # every stage at toy size, on the CPU
#
# Each stage fits in one 10-minute command on an H100/H200 (the device tool's limit), so a
# lease can run them one per call:  benchmarks/gpu_check.sh $OUT setup tests bench  then
# benchmarks/gpu_check.sh $OUT setup main.  OUTDIR receives STAGE.json and STAGE.log per stage
# (a few hundred KiB in all); scratch data goes to $GPU_CHECK_WORK (default: a temporary folder).
#
# Python: $PYTHON, else .venv/bin/python when it exists, else python3 (the GPU machine's own
# PyTorch). The package is used from src/ with its dependencies taken as installed: the setup
# stage names any that are missing and how to carry them (wheels under .whl/ are installed
# into a scratch folder first). Fashion-MNIST: $ALEXNET_FASHION_MNIST, else the Debian path,
# else .fmnist/ in the repository (copy the four .gz files there and carry it).
set -uo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
SMOKE=0
if [ "${1:-}" = "--smoke" ]; then SMOKE=1; shift; fi
if [ $# -lt 1 ] || [ "${1#-}" != "$1" ]; then
    echo "usage: benchmarks/gpu_check.sh [--smoke] OUTDIR [profile] [decode] [setup] [tests] [suite] [bench] [main] [cifar]" >&2
    exit 2
fi
OUTDIR="$1"; shift
STAGES="${*:-setup tests suite bench main}"
for s in $STAGES; do
    case "$s" in profile|decode|setup|tests|suite|bench|main|cifar) ;; *) echo "gpu_check: unknown stage '$s' (profile, decode, setup, tests, suite, bench, main, cifar)" >&2; exit 2 ;; esac
done
mkdir -p "$OUTDIR" || { echo "gpu_check: cannot create $OUTDIR" >&2; exit 2; }
OUTDIR="$(cd "$OUTDIR" && pwd)"
WORK="${GPU_CHECK_WORK:-$(mktemp -d /tmp/gpu-check.XXXXXX)}"
mkdir -p "$WORK"

if [ -n "${PYTHON:-}" ]; then PY="$PYTHON"
elif [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"
else PY=python3; fi
export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d "$ROOT/.whl" ] && ls "$ROOT"/.whl/*.whl >/dev/null 2>&1; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" \
        "$ROOT"/.whl/*.whl && export PYTHONPATH="$PYTHONPATH:$WORK/site"
fi
if [ -z "${ALEXNET_FASHION_MNIST:-}" ] && [ ! -d /usr/share/datasets/fashion-mnist ] && [ -d "$ROOT/.fmnist" ]; then
    export ALEXNET_FASHION_MNIST="$ROOT/.fmnist"
fi
ALEXNET=("$PY" -m alexnet)
cd "$ROOT"

# The main job's GPU preset, read from the Makefile so that there is one definition.
GPU_FLAGS="$(sed -n 's/^GPU_FLAGS ?= //p' Makefile)"

# Sizes: the real check, or toy sizes for --smoke (CPU, CI).
if [ $SMOKE = 1 ]; then
    DEVICE=(--device cpu); IMG_ARGS=(--classes 2 --per-class 8 --val-per-class 2)
    BENCH_ARGS=(--batch-size 4 --steps 1 --warmup 1 --workers 1)
    MAIN_FLAGS="--variant paper --resize 76 --crop 67 --epochs 1 --limit-train 64 --limit-val 32 --batch-size 32 --workers 0"
    PYTEST_GPU=(-m gpu); PYTEST_REST=(--collect-only); EVAL_ARGS=(--limit 32)
else
    DEVICE=(); IMG_ARGS=(--classes 10 --per-class ${GPU_CHECK_PER_CLASS:-300} --val-per-class 10)
    BENCH_ARGS=()
    MAIN_FLAGS="$GPU_FLAGS ${GPU_CHECK_MAIN_FLAGS:-}"
    # the GPU machine has no Chromium: the web page's browser test is left to CI
    PYTEST_GPU=(-m gpu)
    PYTEST_REST=(-m "not gpu" -n 8 --dist loadfile --deselect tests/test_serve_page.py::test_the_page_classifies_a_photograph)
    EVAL_ARGS=()
fi

stamp() { date -u +%Y-%m-%dT%H:%M:%SZ; }

# run_step NAME TIMEOUT CMD...: runs CMD into $WORK/NAME.out (stdout) with stderr in the stage log;
# appends {"name", "rc", "seconds"} to $WORK/steps.jsonl. Once a step of a stage has failed, the
# stage's later steps are skipped (they need what it made; a lease's minutes are better kept).
run_step() {
    local name="$1" limit="$2"; shift 2
    local t0=$SECONDS rc
    if [ -f "$WORK/stage.failed" ]; then
        echo "  [$name] skipped: an earlier step of this stage failed" | tee -a "$LOG" >&2
        return 1
    fi
    echo "+ [$name] $*" | tee -a "$LOG" >&2
    timeout --kill-after=10 "$limit" "$@" >"$WORK/$name.out" 2>>"$LOG"; rc=$?
    tail -c 20000 "$WORK/$name.out" >>"$LOG"
    echo "  [$name] rc=$rc in $((SECONDS - t0)) s" | tee -a "$LOG" >&2
    printf '{"name": "%s", "rc": %d, "seconds": %d}\n' "$name" "$rc" "$((SECONDS - t0))" >>"$WORK/steps.jsonl"
    [ $rc = 0 ] || touch "$WORK/stage.failed"
    return $rc
}

# finish STAGE: writes OUTDIR/STAGE.json from the steps and their JSON outputs.
finish() {
    "$PY" - "$1" "$WORK" "$OUTDIR" "$SMOKE" <<'EOF'
import json, os, sys, platform, datetime
stage, work, out, smoke = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
steps = [json.loads(l) for l in open(os.path.join(work, "steps.jsonl"))] if os.path.exists(os.path.join(work, "steps.jsonl")) else []
results = {}
for s in steps:
    path = os.path.join(work, s["name"] + ".out")
    try:
        text = open(path).read()
        start = text.find("{")
        if s["name"] == "metrics":  # JSON lines: one record per epoch
            results["metrics"] = [json.loads(l) for l in text.splitlines() if l.strip()]
        else:
            results[s["name"]] = json.loads(text[start:]) if start >= 0 else None
    except (OSError, ValueError):
        results[s["name"]] = None
    if s["name"].startswith("pytest"):
        junit = os.path.join(work, s["name"] + ".xml")
        if os.path.exists(junit):
            import xml.etree.ElementTree as ET
            root = ET.parse(junit).getroot()
            suite = root if root.tag == "testsuite" else root.find("testsuite")
            failed = [f"{c.get('classname')}::{c.get('name')}: {(c.find('failure') if c.find('failure') is not None else c.find('error')).get('message', '')[:300]}"
                      for c in suite.iter("testcase") if c.find("failure") is not None or c.find("error") is not None]
            results[s["name"]] = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")} | {
                "seconds": float(suite.get("time", 0)), "failed": failed}
try:
    import torch
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU, {os.cpu_count()} cores"
    versions = {"torch": torch.__version__, "cuda": torch.version.cuda}
    import torchvision
    versions["torchvision"] = torchvision.__version__
except Exception as e:  # the summary must still be written
    device, versions = f"unknown ({e})", {}
summary = {"stage": stage, "smoke": smoke, "ok": all(s["rc"] == 0 for s in steps), "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "device": device, "host": platform.node(), "python": platform.python_version(), "versions": versions,
           "steps": steps, "results": results}
with open(os.path.join(out, stage + ".json"), "w") as f:
    json.dump(summary, f, indent=1)
print(f"{stage}: {'ok' if summary['ok'] else 'FAILED'} " + ", ".join(f"{s['name']} rc={s['rc']} {s['seconds']}s" for s in steps))
EOF
}

begin() {
    LOG="$OUTDIR/$1.log"; : >"$LOG"; rm -f "$WORK/steps.jsonl" "$WORK/stage.failed"
    echo "== $1 $(stamp) python=$PY work=$WORK" | tee -a "$LOG" >&2
}

stage_profile() {
    begin profile
    # the smoke run compiles with the eager backend (inductor takes minutes on a CPU), so that the
    # compile section runs too
    run_step profile 540 "$PY" benchmarks/gpu_profile.py --out "$OUTDIR/profile" --budget "${GPU_CHECK_PROFILE_BUDGET:-200}" \
        $([ $SMOKE = 1 ] && echo --smoke --compile-backend eager)
    finish profile
}

stage_decode() {
    begin decode
    run_step decode-overlap 240 "$PY" benchmarks/decode_overlap.py --out "$OUTDIR/decode" $([ $SMOKE = 1 ] && echo --smoke)
    finish decode
}

stage_setup() {
    begin setup
    run_step environment 120 "$PY" benchmarks/gpu_env.py --json
    finish setup
}

stage_tests() {
    begin tests
    run_step pytest-gpu 400 "$PY" -m pytest -q -p no:cacheprovider "${PYTEST_GPU[@]}" --junitxml "$WORK/pytest-gpu.xml"
    finish tests
}

stage_suite() {
    begin suite
    run_step pytest-rest 420 "$PY" -m pytest -q -p no:cacheprovider "${PYTEST_REST[@]}" --junitxml "$WORK/pytest-rest.xml"
    finish suite
}

stage_bench() {
    begin bench
    local img="$WORK/images" jpeg="$WORK/packed-jpeg" raw="$WORK/packed-raw"
    [ -d "$img/train" ] || run_step make-images 300 "$PY" benchmarks/make_images.py "$img" "${IMG_ARGS[@]}"
    [ -f "$jpeg/meta.json" ] || run_step prepare-jpeg 300 "${ALEXNET[@]}" prepare "$img" "$jpeg" --json
    [ -f "$raw/meta.json" ] || run_step prepare-raw 300 "${ALEXNET[@]}" prepare "$img" "$raw" --encoding raw --json
    # model, decode, loader, end-to-end from packed JPEGs (CPU decode) and the plain baseline
    local b
    for b in ${GPU_CHECK_BENCH:-jpeg gpu-decode raw split compile}; do
        case "$b" in
        jpeg)  # model, decode, loader, end-to-end from packed JPEGs (CPU decode) and from the decoded
               # cache (GPU memory where it fits), and the plain baseline
            run_step bench-jpeg 420 "${ALEXNET[@]}" bench --json "${DEVICE[@]}" "${BENCH_ARGS[@]}" \
                $([ $SMOKE = 1 ] && echo --variant paper) --images "$img" --packed "$jpeg" --cache auto ;;
        gpu-decode)
            [ $SMOKE = 1 ] || run_step bench-gpu-decode 300 "${ALEXNET[@]}" bench --json "${BENCH_ARGS[@]}" --packed "$jpeg" --gpu-decode --no-baseline ;;
        raw)  # the smoke run measures one network in each step: paper here, torchvision there
            run_step bench-raw 300 "${ALEXNET[@]}" bench --json "${DEVICE[@]}" "${BENCH_ARGS[@]}" \
                $([ $SMOKE = 1 ] && echo --variant torchvision) --packed "$raw" ;;
        split)
            run_step bench-split 300 "${ALEXNET[@]}" bench --json "${BENCH_ARGS[@]}" --variant paper \
                --model-parallel "$([ $SMOKE = 1 ] && echo cpu,cpu || echo cuda:0,cuda:0)" ;;
        compile)
            [ $SMOKE = 1 ] || run_step bench-compile 480 "${ALEXNET[@]}" bench --json "${BENCH_ARGS[@]}" --compile ;;
        *) echo "gpu_check: unknown bench step '$b' in GPU_CHECK_BENCH" >&2; return 2 ;;
        esac
    done
    finish bench
}

stage_main() {
    begin main
    local run="$WORK/run-fashion-mnist"
    # shellcheck disable=SC2086  # the flags are words
    run_step train 540 "${ALEXNET[@]}" train --data fashion-mnist $MAIN_FLAGS "${DEVICE[@]}" --out "$run" --overwrite --log-every 10
    # one pass: the 10 crops' figures and their center crop's alone
    run_step evaluate-ten-crop 180 "${ALEXNET[@]}" evaluate "$run" --split test --ten-crop --precision auto --json "${DEVICE[@]}" "${EVAL_ARGS[@]}"
    run_step metrics 30 cat "$run/metrics.jsonl"
    finish main
}

stage_cifar() {
    begin cifar
    local data="${GPU_CHECK_CIFAR_DATA:-$WORK/cifar10-jpeg}" out="${GPU_CHECK_CIFAR_OUT:-$ROOT/runs/gpu-cifar}" tgz=""
    if [ ! -d "$data" ]; then
        for tgz in "$ROOT/.cifar/cifar10-jpeg.tar.gz" "$ROOT/../shared/data/cifar10-jpeg.tar.gz" ""; do
            [ -z "$tgz" ] || [ -f "$tgz" ] && break
        done
        if [ -z "$tgz" ]; then
            echo "gpu_check: no CIFAR-10: copy ../shared/data/cifar10-jpeg.tar.gz to .cifar/ and carry .cifar" | tee -a "$LOG" >&2
            touch "$WORK/stage.failed"
        else
            run_step unpack 120 tar -xzf "$tgz" -C "$WORK"
        fi
    fi
    # Time up (124) is not a failure: the study stopped with a checkpoint and the next call continues it.
    run_step study $((${GPU_CHECK_CIFAR_S:-480} + 60)) bash -c 'timeout -s TERM "$0" "$@"; rc=$?; \
        if [ $rc = 124 ]; then echo "time is up: call the stage again to continue"; exit 0; fi; exit $rc' \
        "${GPU_CHECK_CIFAR_S:-480}" "${ALEXNET[@]}" reproduce --preset cifar --data "$data" "${DEVICE[@]}" --out "$out"
    mkdir -p "$OUTDIR/cifar"
    cp "$out"/report.md "$out"/results.json "$out"/*.png "$OUTDIR/cifar/" 2>/dev/null
    finish cifar
}

status=0
for s in $STAGES; do
    "stage_$s" || status=1
    "$PY" -c 'import json,sys; sys.exit(0 if json.load(open(sys.argv[1]))["ok"] else 1)' "$OUTDIR/$s.json" || status=1
done
[ -n "${GPU_CHECK_WORK:-}" ] || rm -rf "$WORK"
exit $status
