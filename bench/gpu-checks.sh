#!/usr/bin/env bash
# The GPU measurements as ONE prepared call of at most 8 minutes, for the lent GPU machine:
#
#   bench/gpu-wheels.sh                      # here, once: the wheels the image lacks -> .whl/
#   device run, carry [".whl"], timeout_s 540: bash bench/gpu-checks.sh
#   bash bench/gpu-checks.sh --dry-run       # the CPU: every step with tiny models (a test)
#   bash bench/gpu-checks.sh --list          # each step's limit and command, running nothing
#
# Steps run in priority order, each under its own time limit, and each writes its JSON into
# $OUT the moment it ends (a later failure never loses an earlier result). A step whose limit
# would carry the run past the budget (BUDGET, 480 s) is skipped and listed, never half-run;
# if the preflight fails (imports, CUDA), the rest is skipped. The summary table at the end
# (bench/gpu_summary.py) reads the JSONs; $OUT/steps.tsv says how each step ended.
# Random weights throughout (none can be downloaded): timings and counts only.
set -uo pipefail
cd "$(dirname "$0")/.."
mode=gpu
case "${1:-}" in
  --dry-run) mode=dry ;;
  --list) mode=list ;;
  "") ;;
  *) echo "usage: bench/gpu-checks.sh [--dry-run | --list]" >&2; exit 2 ;;
esac
OUT=${OUT:-$(mktemp -d)}
BUDGET=${BUDGET:-480}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if [ "$mode" = gpu ] && [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
PY=${PY:-python3}

# Sizes: the real ones on the GPU; the smallest that walk the same code on a CPU.
if [ "$mode" = dry ]; then
  song=(--tiny --seconds 2 --steps 2 --denoise 0.5 --device cpu) long=(--seconds 4)
  sweep=(--tiny --repeat 1 --device cpu) engines=(--quick --seconds 2 --device cpu)
  pair=(--single)
  export TORCHDYNAMO_DISABLE=1  # --compile walks its path; compiling C++ on a CPU is minutes
else
  song=(--seconds 180) long=(--seconds 600) sweep=() pair=()
  engines=(--seconds 180 --engines ace-step,stable-audio-3-small,stable-audio-3-medium)
fi

# NAME LIMIT_S COMMAND...: in priority order; the limits add up to at most BUDGET.
STEPS=(
  "preflight 20 $PY bench/preflight.py"
  "unet-sweep 40 $PY bench/unet_sweep.py ${sweep[*]}"
  "pair-vs-loop 150 $PY bench/render.py ${song[*]} ${pair[*]}"
  "pair-compiled 85 $PY bench/render.py ${song[*]} ${pair[*]} --skip-riffusion --compile --warmup-full"
  "pair-shifted 30 $PY bench/render.py ${song[*]} ${pair[*]} --skip-riffusion --windows shifted"
  "draft 20 $PY bench/render.py ${song[*]} ${pair[*]} --skip-riffusion --draft"
  "lcm-draft 20 $PY bench/render.py ${song[*]} ${pair[*]} --skip-riffusion --scheduler lcm --steps 8 --denoise 0.5 --guidance 1.5"
  "engines 65 $PY bench/engines.py ${engines[*]}"
  "song-600s-8gb 50 $PY bench/render.py ${song[*]} ${long[*]} ${pair[*]} --skip-riffusion --memory-cap-gb 8"
)

if [ "$mode" = list ]; then
  total=0
  for entry in "${STEPS[@]}"; do
    read -r name limit command <<<"$entry"
    printf '%s\t%s\t%s\n' "$name" "$limit" "$command"
    total=$((total + limit))
  done
  printf 'total\t%s\n' "$total"
  exit 0
fi

# The dry run's limits are the GPU's, times this (a 2-core CPU is slower than an H100).
scale=$([ "$mode" = dry ] && echo "${DRY_SCALE:-4}" || echo 1)
mkdir -p "$OUT"
: >"$OUT/steps.tsv"
began=$SECONDS
stop=""
for entry in "${STEPS[@]}"; do
  read -r name limit command <<<"$entry"
  limit=$((limit * scale))
  used=$((SECONDS - began))
  if [ -n "$stop" ]; then
    printf '%s\tskipped\t0\t%s\t%s\n' "$name" "$limit" "$stop" >>"$OUT/steps.tsv"
    continue
  fi
  if [ $((used + limit)) -gt $((BUDGET * scale)) ]; then
    printf '%s\tskipped\t0\t%s\tpast the budget\n' "$name" "$limit" >>"$OUT/steps.tsv"
    continue
  fi
  echo "== $name (at most $limit s): $command"
  start=$SECONDS
  # shellcheck disable=SC2086  # the command's words, as listed above
  timeout "$limit" $command --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1
  code=$?
  spent=$((SECONDS - start))
  case $code in
    0) status=ok ;;
    124) status=timeout ;;
    *) status="failed ($code)" ;;
  esac
  printf '%s\t%s\t%s\t%s\t\n' "$name" "$status" "$spent" "$limit" >>"$OUT/steps.tsv"
  tail -n 12 "$OUT/$name.log"
  if [ "$name" = preflight ] && [ "$status" != ok ]; then
    stop="the preflight failed"
  fi
done
echo
"$PY" bench/gpu_summary.py "$OUT"
