#!/usr/bin/env bash
# What benchmarks/gpu.py needs on the lent GPU machine besides its own image (CUDA torch,
# numpy, OpenCV, Pillow, click, tqdm, portalocker are there; nothing can be fetched there):
# PyAV as a cp312 wheel, platformdirs, and sam2 with its pure-Python needs (hydra-core,
# omegaconf, antlr4, iopath) packed from this checkout's virtual environment. Writes .gpu/
# (ignored by git; the device tool carries it, 64 MiB with the working tree) and prints the
# device command. Run from the repository root with the project's venv active.
set -euo pipefail
rm -rf .gpu && mkdir -p .gpu
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    -d .gpu "av==$(python -c 'import av; print(av.__version__)')" platformdirs
site=$(python -c 'import sam2, os; print(os.path.dirname(os.path.dirname(sam2.__file__)))')
tar -czf .gpu/pure.tar.gz -C "$site" --exclude=__pycache__ \
    sam2 hydra omegaconf antlr4 iopath
du -sh .gpu
echo 'device run (carry [".gpu"], timeout_s 540):'
echo 'mkdir -p /tmp/site && tar -xzf .gpu/pure.tar.gz -C /tmp/site && python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .gpu/*.whl && export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 && nvidia-smi -L && python3 benchmarks/gpu.py --out $OUT 2>&1 | tee $OUT/gpu.log'
