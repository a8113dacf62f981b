#!/usr/bin/env bash
# Here (no GPU): pack what the GPU machine of this workplace lacks for benchmarks/device/run.sh.
# Its image has python 3.12, torch 2.11 (CUDA), accelerate, numpy, pandas, pyarrow, safetensors, but
# not lerobot 0.4.2, transformers 4.53.3 (it has 5.x), nor their other needs; nothing can be installed
# there. The wheels are unpacked and xz-compressed (61 MiB of wheels -> 38 MiB) so that they, the
# repo and the reference vectors fit the 64 MiB a call may carry.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl .gpu .git/info && rm -rf .whl/site312 && cp -r ../shared/testdata .gpu/
grep -qx '/.gpu/' .git/info/exclude || echo '/.gpu/' >> .git/info/exclude
pkgs="lerobot==0.4.2 transformers==4.53.3 tokenizers==0.21.4 huggingface-hub==0.35.3 av==15.1.0 datasets==4.1.1
deepdiff==8.6.2 diffusers==0.35.2 dill==0.4.0 draccus==0.10.0 gymnasium==1.4.0 farama-notifications mergedeep
multiprocess==0.70.16 orderly-set orjson pydantic==2.14.4 pydantic-core==2.50.5 pydot pyserial termcolor==3.3.0
jsonlines typing-inspection annotated-types typing-extensions fsspec==2025.9.0"
for p in $pkgs; do
  PIP_CONSTRAINT=/dev/null python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl/wheels "$p" 2>&1 | grep -v WARNING || true
done
for w in .whl/wheels/*.whl; do unzip -q -o "$w" -d .whl/site312; done
tar cf - -C .whl site312 | xz -T2 -6 > .whl/site312.tar.xz && rm -rf .whl/site312
du -sh .whl/site312.tar.xz .gpu
echo 'carry: [".whl/site312.tar.xz", ".gpu"]; command: bash benchmarks/device/run.sh'
