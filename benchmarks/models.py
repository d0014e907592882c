"""Model cache and loader timings: sha256 throughput, a localhost download with the real
cache code (resume path included), the cached fast path, and load_sam2 for a tiny checkpoint.

Run: /work/venv/bin/python benchmarks/models.py [--mib 156]
Numbers measure vosfx's own overhead; a real download is bounded by the network instead.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the shared test helpers: file server, checkpoints


def _timed(fn, repeat: int = 3) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=156, help="payload size (tiny is 149 MiB)")
    args = parser.parse_args()

    import torch
    from fileserver import FileServer

    from vosfx.models import cache, download, registry
    from vosfx.models.checkpoint import load_sam2
    from vosfx.models.registry import ModelSpec

    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, python {platform.python_version()}, "
        f"torch {torch.__version__}"
    )
    print(f"load average at start: {os.getloadavg()}")
    payload = random.Random(0).randbytes(args.mib * 2**20)
    sha = hashlib.sha256(payload).hexdigest()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["VOSFX_HOME"] = tmp
        src = Path(tmp) / "payload.bin"
        src.write_bytes(payload)
        t = _timed(lambda: cache.sha256_file(src))
        print(f"sha256_file: {args.mib} MiB in {t:.3f} s = {args.mib / t:.0f} MiB/s")

        registry.register(
            ModelSpec(
                id="bench",
                url="https://x.invalid/bench.pt",
                config="configs/sam2.1/sam2.1_hiera_t.yaml",
                sha256=sha,
                size_bytes=len(payload),
            )
        )
        download.BACKOFF_S = 0.0
        with FileServer(files={"bench.pt": payload}) as srv:
            os.environ["VOSFX_MODEL_BASE_URL"] = srv.url
            t = _timed(lambda: cache.pull("bench", force=True), repeat=2)
            print(
                f"download over 127.0.0.1 (stream + sha256 + fsync + rename): "
                f"{args.mib} MiB in {t:.3f} s = {args.mib / t:.0f} MiB/s"
            )
            srv.drop_first["bench.pt"] = len(payload) // 2
            cache.pull("bench", force=True)
            t0 = time.perf_counter()
            srv.drop_first["bench.pt"] = len(payload) // 2
            cache.pull("bench", force=True)
            t = time.perf_counter() - t0
            print(
                f"download with a drop at 50% and a Range resume: {t:.3f} s "
                f"({len(srv.requests)} requests in all)"
            )
        t = _timed(lambda: cache.ensure_checkpoint("bench", offline=True), repeat=5)
        print(f"ensure_checkpoint, cached and indexed (no re-hash): {t * 1e3:.2f} ms")
        t = _timed(lambda: cache.verify(["bench"]))
        print(f"verify (full re-hash): {t:.3f} s")

        from ckpt import make_checkpoint

        path, _ = make_checkpoint(Path(tmp) / "sam2.1_hiera_tiny.pt")
        for size in (1024, 256):
            t = _timed(lambda s=size: load_sam2(path, image_size=s), repeat=2)
            print(
                f"load_sam2(tiny, image_size={size}) [build + torch.load weights_only + "
                f"strict check]: {t:.2f} s"
            )
    print(f"load average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
