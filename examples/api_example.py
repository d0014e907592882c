"""Matte a clip from Python: the same job `vosfx matte` runs, with a progress callback.

python examples/api_example.py                       # the bundled ball clip
python examples/api_example.py clip.mp4 mask.png out.mov --preset balanced
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vosfx import Job, run
from vosfx.job import PromptSpec
from vosfx.presets import resolve_config

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("input", nargs="?", default=str(HERE / "ball.mp4"))
    ap.add_argument("mask", nargs="?", default=str(HERE / "ball_mask.png"))
    ap.add_argument("output", nargs="?", default="ball_matte.mov")
    ap.add_argument("--preset", action="append", default=[])
    args = ap.parse_args()

    job = Job(
        input=args.input,
        prompts=(PromptSpec(frame=0, mask=args.mask),),
        output=args.output,
        config=resolve_config(args.preset),
        overwrite=True,
    )

    def on_progress(ev):
        if ev.event == "frame" and ev.frames_done % 10 == 0:
            print(f"{ev.frames_done}/{ev.total_frames} frames, {ev.fps:.2f} fps")

    report = run(job, on_progress=on_progress)
    print(f"wrote {', '.join(report.outputs)} ({report.frames} frames, {report.fps:.2f} fps)")
    for obj_id, runs in report.presence.items():
        absent = [(a, b) for a, b, present in runs if not present]
        print(
            f"object {obj_id}: absent in {absent}" if absent else f"object {obj_id}: always present"
        )


if __name__ == "__main__":
    main()
