#!/usr/bin/env bash
# Runs on the lent GPU machine (the device tool's third call; benchmarks/gpu_carry.sh): puts
# what .gpu/stage3 carries and the onnxruntime-gpu halves staged in /tmp/vosfx-stage into
# /tmp/site, then runs benchmarks/gpu.py with its log and gpu.json in $OUT.
# GPU_ARGS: extra arguments for gpu.py (e.g. "--models tiny,small"); GPU_SCRIPT: another
# script of the same arguments to run instead (benchmarks/gpu_profile.py).
set -uo pipefail
OUT=${OUT:-/tmp/vosfx-gpu-out}
mkdir -p /tmp/site "$OUT"
# vosfx runs from this copy of the repository, not an install: the package the wheel maps
# presets/ to (pyproject.toml's vosfx._builtin_presets) is made here
[ -d vosfx/_builtin_presets ] || cp -r presets vosfx/_builtin_presets
tar -xzf .gpu/stage3/pure.tar.gz -C /tmp/site || exit 1
python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site \
    .gpu/stage3/*.whl || exit 1
stage=/tmp/vosfx-stage
if [ -f $stage/ort.part0 ] && [ -f $stage/ort.part1 ]; then
    cat $stage/ort.part0 $stage/ort.part1 > /tmp/ort.tar.xz
    if [ "$(sha256sum /tmp/ort.tar.xz | cut -d' ' -f1)" = "$(cat .gpu/stage3/ort.sha256)" ]; then
        python3 -c "import tarfile; tarfile.open('/tmp/ort.tar.xz').extractall('/tmp/site', filter='data')" \
            && echo "onnxruntime-gpu unpacked"
    else
        echo "onnxruntime-gpu: the staged halves do not hash to ort.sha256; not installed"
    fi
else
    echo "onnxruntime-gpu: no staged halves in $stage (a fresh machine?); not installed"
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
nproc
python3 "${GPU_SCRIPT:-benchmarks/gpu.py}" --out "$OUT" ${GPU_ARGS:-} 2>&1 | tee "$OUT/gpu.log"
