#!/usr/bin/env bash
# Issue 11's GPU measurements as one prepared script, for the lent GPU machine (device `run`):
#
#   bench/gpu-wheels.sh                        # here, once: the wheels the image lacks -> .whl/
#   device run, carry [".whl"], timeout_s 600: bash bench/gpu-checks.sh core    (~6 min)
#   device run, carry [".whl"], timeout_s 600: bash bench/gpu-checks.sh extra   (~5 min)
#
# Each benchmark writes its JSON into $OUT (what comes back); a failing one is logged and the
# rest still run. Random weights throughout (none can be downloaded): timings and counts only.
#   core:  the 3-minute stereo pair at the defaults with the Riffusion-style loop in the same
#          run; the same pair with --draft; a 10-minute song on an 8 GB memory cap.
#   extra: the preview benchmark (with the tiny preview VAE on quick previews, and a 3 x 3
#          grid); one VAE tile by SD 1.5's VAE and by TAESD; the pair with --compile
#          reduce-overhead (CUDA graphs) and --channels-last.
# QUICK=1 runs the same commands at CPU size (reduced width, 10 s) to check the script here.
set -uo pipefail
cd "$(dirname "$0")/.."
part=${1:-core}
OUT=${OUT:-$(mktemp -d)}
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
PY=${PY:-python3}
if [ "${QUICK:-0}" = 1 ]; then
  size=(--quick) long=(--quick --seconds 20) preview=(--model tiny --song-seconds 30 --start 10)
else
  size=(--seconds 180) long=(--seconds 600) preview=(--model full --song-seconds 180)
fi
"$PY" -c "import torch; print(torch.__version__, torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU')"

step() {  # step NAME SECONDS COMMAND...: one benchmark, its log and JSON in $OUT
  local name=$1 limit=$2
  shift 2
  echo "== $name (at most ${limit} s): $*"
  if ! timeout "$limit" "$@" --json "$OUT/$name.json" >"$OUT/$name.log" 2>&1; then
    echo "!! $name failed or ran out of time; the end of its log:"
  fi
  tail -n 25 "$OUT/$name.log"
}

case "$part" in
  core)
    step render-pair 240 "$PY" bench/render.py "${size[@]}" --repeat 1
    step render-pair-draft 120 "$PY" bench/render.py "${size[@]}" --draft --skip-riffusion
    step render-600s-8gb 150 "$PY" bench/render.py "${long[@]}" --memory-cap-gb 8 --skip-riffusion
    ;;
  extra)
    step preview 150 "$PY" bench/preview.py "${preview[@]}" --repeat 5 --grid 3 --preview-vae
    step vae-decode 60 "$PY" bench/vae_decode.py --repeat 10
    step render-pair-compiled 300 "$PY" bench/render.py "${size[@]}" --skip-riffusion \
      --compile reduce-overhead --channels-last
    ;;
  *)
    echo "usage: bench/gpu-checks.sh core|extra" >&2
    exit 2
    ;;
esac
ls -la "$OUT"
