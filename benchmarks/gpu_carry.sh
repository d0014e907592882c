#!/usr/bin/env bash
# What benchmarks/gpu.py needs on the lent GPU machine besides its own image (CUDA torch,
# numpy, OpenCV, Pillow, click, numba, onnx are there; nothing can be fetched there), packed
# for the device tool, which carries 64 MiB a call with the ~22 MiB working tree:
#
#   .gpu/stage3/  PyAV (cp312 wheel), platformdirs, and sam2 with its pure-Python needs
#                 (hydra-core, omegaconf, antlr4, iopath) from this checkout's venv: 35 MiB
#   .gpu/stage1/, .gpu/stage2/
#                 onnxruntime-gpu (CUDA 13 build), 255.6 MB as a wheel: its CUDA provider
#                 pruned to sm_90 machine code (benchmarks/fatbin_keep.py), the unused C
#                 library left out, xz-compressed (58 MiB) and cut in two halves
#
# Three device calls in a row on one warm machine (it is given back 30 s after a call): the
# first two copy their half to /tmp/vosfx-stage there, the third runs
# benchmarks/gpu_device.sh. Without the halves (a fresh machine) the torch rows still run.
# Run from the repository root with the project's venv active; prints the three calls.
set -euo pipefail
ORT_GPU=${ORT_GPU:-onnxruntime-gpu==1.31.1}
rm -rf .gpu && mkdir -p .gpu/stage1 .gpu/stage2 .gpu/stage3 .gpu/tmp
get() {
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        -d "$@"
}
get .gpu/stage3 "av==$(python -c 'import av; print(av.__version__)')" platformdirs
site=$(python -c 'import sam2, os; print(os.path.dirname(os.path.dirname(sam2.__file__)))')
tar -czf .gpu/stage3/pure.tar.gz -C "$site" --exclude=__pycache__ \
    sam2 hydra omegaconf antlr4 iopath

get .gpu/tmp "$ORT_GPU"
mkdir -p .gpu/tmp/pkg
unzip -q .gpu/tmp/onnxruntime_gpu-*.whl -d .gpu/tmp/pkg
capi=.gpu/tmp/pkg/onnxruntime/capi
python benchmarks/fatbin_keep.py "$capi/libonnxruntime_providers_cuda.so" .gpu/tmp/cuda.so \
    --arch 90
mv .gpu/tmp/cuda.so "$capi/libonnxruntime_providers_cuda.so"
rm -f "$capi"/libonnxruntime.so.*  # the C API's library: the Python module does not load it
find .gpu/tmp/pkg -name __pycache__ -prune -exec rm -rf {} +
tar -C .gpu/tmp/pkg -cf - . | xz -9e -T2 > .gpu/tmp/ort.tar.xz
sha256sum .gpu/tmp/ort.tar.xz | cut -d' ' -f1 > .gpu/tmp/ort.sha256
half=$(( ($(stat -c %s .gpu/tmp/ort.tar.xz) + 1) / 2 ))
split -b "$half" -d -a 1 .gpu/tmp/ort.tar.xz .gpu/tmp/ort.part
mv .gpu/tmp/ort.part0 .gpu/stage1/ && mv .gpu/tmp/ort.part1 .gpu/stage2/
cp .gpu/tmp/ort.sha256 .gpu/stage3/
rm -rf .gpu/tmp
du -sh .gpu/stage*
cat <<'EOF'
device calls, one right after the other:
 1. carry [".gpu/stage1"], timeout_s 60:
    mkdir -p /tmp/vosfx-stage && cp .gpu/stage1/* /tmp/vosfx-stage/ && nvidia-smi -L
 2. carry [".gpu/stage2"], timeout_s 60:
    mkdir -p /tmp/vosfx-stage && cp .gpu/stage2/* /tmp/vosfx-stage/ && ls -la /tmp/vosfx-stage
 3. carry [".gpu/stage3"], timeout_s 560:
    bash benchmarks/gpu_device.sh
EOF
