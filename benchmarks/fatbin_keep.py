"""Keep one GPU architecture's machine code in a CUDA shared library: the payloads of the other
architectures' entries in its ``.nv_fatbin`` section are overwritten with zeros, the layout
and every header left as they are, so the file compresses to a fraction of its size.

For benchmarks/gpu_carry.sh only: onnxruntime-gpu's CUDA provider (284 MB, cubins for
sm_75/80/86/89/90/120) must reach a lent H200 (sm_90) through a device tool that carries
64 MiB. The CUDA runtime loads the entry that matches the device, so the kernels that run are
the library's own sm_90 ones, unchanged. The result runs only on that architecture.

    python benchmarks/fatbin_keep.py IN.so OUT.so --arch 90

A fatbin (CUDA's container, ``0xBA55ED50``) holds entries, each a header (kind, header size,
payload size, ..., the SM version at byte 28) and its payload.
"""

from __future__ import annotations

import argparse
import struct
import subprocess
from collections import Counter
from pathlib import Path

MAGIC = 0xBA55ED50


def section(path: Path, name: str) -> tuple[int, int]:
    """(file offset, size) of ELF section ``name``, read with readelf."""
    out = subprocess.run(["readelf", "-SW", str(path)], capture_output=True, text=True, check=True)
    for line in out.stdout.splitlines():
        cols = line.replace("[ ", "[").split()
        if len(cols) > 5 and cols[1] == name:
            return int(cols[4], 16), int(cols[5], 16)
    raise SystemExit(f"{path}: no {name} section")


def entries(data: bytearray, start: int, end: int):
    """(payload offset, payload size, kind, SM version) of every entry of every fatbin."""
    pos = start
    while pos + 16 <= end:
        magic, _version, header, size = struct.unpack_from("<IHHQ", data, pos)
        if magic != MAGIC:  # alignment padding between fatbins
            pos += 8
            continue
        entry, stop = pos + header, pos + header + size
        while entry < stop:
            kind, _v, entry_header, payload = struct.unpack_from("<HHIQ", data, entry)
            arch = struct.unpack_from("<I", data, entry + 28)[0]
            yield entry + entry_header, payload, kind, arch
            entry += entry_header + payload
        pos = stop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("src", type=Path)
    ap.add_argument("dst", type=Path)
    ap.add_argument("--arch", type=int, required=True, help="SM version to keep, e.g. 90")
    args = ap.parse_args()
    data = bytearray(args.src.read_bytes())
    start, size = section(args.src, ".nv_fatbin")
    kept, cleared = Counter(), Counter()
    for offset, payload, _kind, arch in entries(data, start, start + size):
        if arch == args.arch:
            kept[arch] += payload
        else:
            data[offset : offset + payload] = bytes(payload)
            cleared[arch] += payload
    if not kept:
        raise SystemExit(f"{args.src}: no sm_{args.arch} entries (found {sorted(cleared)})")
    args.dst.write_bytes(data)
    mib = {a: round(n / 2**20) for a, n in sorted((kept + cleared).items())}
    print(f"{args.src.name}: MiB per SM version {mib}; kept sm_{args.arch}")


if __name__ == "__main__":
    main()
