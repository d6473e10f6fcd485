#!/usr/bin/env bash
# Run HERE (where PyPI is reachable), before a session's GPU checks: downloads into .whl/ the
# wheels the benchmarks need that the lent GPU machine's image lacks (it has torch, numpy,
# scipy, transformers, peft, accelerate, pillow, tqdm, safetensors; nothing can be fetched
# there). Python 3.12, x86-64 Linux, the versions requirements.txt pins. ~25 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
pin() { grep -i "^$1==" requirements.txt | head -1; }
wanted=(diffusers soundfile soxr mido mutagen librosa audioread pooch platformdirs decorator
        lazy_loader)
specs=()
for name in "${wanted[@]}"; do
  spec=$(pin "$name" || true)
  specs+=("${spec:-$name}")
done
rm -rf .whl && mkdir -p .whl
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
  --platform any -d .whl "${specs[@]}"
ls -la .whl
du -sh .whl
