"""SAM2Long in the clip session: frames revised when a pass ends reach the output.

A scripted backend (no model) makes the best lineage change one frame later: after a frame
whose remembered mask was the loose candidate, the decoder is confident (IoUs 0.95, 0.9);
after the tight one it is not (0.6, 0.55). So on every frame the tight candidate looks best at
the time, and the next frame shows the loose one's lineage was: the pipeline must write the
loose candidate on every frame but the last.
"""

from __future__ import annotations

from contextlib import contextmanager
from fractions import Fraction

import numpy as np
import pytest

from vosfx.config import MemoryConfig
from vosfx.engine.backend import TrackOutput
from vosfx.engine.policies import make_policy
from vosfx.engine.tracker import Tracker
from vosfx.errors import BackendError
from vosfx.pipeline import results_in_order
from vosfx.session import ClipSession
from vosfx.types import Frame, Prompt, VideoInfo

H, W, N = 24, 32, 9
SIDE = 16


def _disc(r):
    ys, xs = np.mgrid[:SIDE, :SIDE]
    return np.where((xs - 8) ** 2 + (ys - 8) ** 2 <= r * r, 6.0, -6.0).astype(np.float32)


TIGHT, LOOSE, FAR = _disc(3), _disc(5), _disc(1)


class SwitchBackend:
    image_size, num_maskmem, max_obj_ptrs, device = 64, 7, 16, "cpu"
    multimask_output_in_sam = multimask_output_for_tracking = True
    multimask_min_pt_num, multimask_max_pt_num = 0, 1
    use_mask_input_as_output_without_sam = binarize_mask_from_pts_for_mem_enc = True
    supports_key_scale = True

    def encode_image(self, rgb8, interrupt=None):
        return int(rgb8[0, 0, 0])  # the frame index, painted into the frame

    def track(self, req):
        prev = max(req.memories, key=lambda m: m.t_pos).maskmem
        ious = [0.95, 0.9, 0.1] if prev == "loose" else [0.6, 0.55, 0.1]
        score = 1.0 if req.features == 2 else 3.0  # frame 2: the uncertain branch
        multi = np.stack([TIGHT, LOOSE, FAR])
        return TrackOutput(
            multi, np.array(ious, np.float32), TIGHT, 0.6, score, ["p0", "p1", "p2"], "ps"
        )

    def mask_as_output(self, features, mask):
        return TIGHT, 10.0, "pm"

    def encode_memory(self, features, low_res, score, binarize):
        return "loose" if (low_res > 0).sum() == (LOOSE > 0).sum() else "other"


class _Engine:
    def __init__(self, backend):
        self.backend = backend

    def start(self, info, memory):
        return Tracker(self.backend, lambda: make_policy(memory), info, fill_hole_area=0)


def _frames():
    return [Frame(t, np.full((H, W, 3), t, np.uint8), t, Fraction(1, 25)) for t in range(N)]


@contextmanager
def _open(frames, lo, hi):
    yield iter(frames[lo:hi])


def test_revised_frames_are_what_the_pipeline_writes():
    frames = _frames()
    info = VideoInfo(
        path="", width=W, height=H, num_frames=N, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    area = {int((m > 0).sum()): name for m, name in ((TIGHT, "tight"), (LOOSE, "loose"))}
    with ClipSession(_Engine(SwitchBackend()), info, MemoryConfig(policy="sam2long")) as s:
        s.set_prompts([Prompt(0, 1, mask=np.ones((H, W), bool))])
        assert s.split_point() == N  # every frame tracked before any is written
        out = list(results_in_order(s, lambda lo, hi, _final: _open(frames, lo, hi)))
        report = s.engine.report()
    got = [area[int((r.logits[0] > 0).sum())] for _f, r in out]
    # frame 0 the prompt; 1 the first tracked frame (one hypothesis); 2 .. N-2 revised to the
    # loose lineage; the last frame keeps the best at the time
    assert got == ["tight", "tight"] + ["loose"] * (N - 3) + ["tight"], got
    assert "revised along the best final pathway" in " ".join(report["1"]["events"].values())


def test_a_backend_without_key_scales_refuses_sam2long():
    class Plain(SwitchBackend):
        supports_key_scale = False

    info = VideoInfo(
        path="", width=W, height=H, num_frames=N, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    with pytest.raises(BackendError, match="--memory sam2long.*--backend torch"):
        Tracker(Plain(), lambda: make_policy(MemoryConfig(policy="sam2long")), info)


def test_a_correction_on_a_tracked_frame_is_refused():
    from vosfx.errors import PromptError

    info = VideoInfo(
        path="", width=W, height=H, num_frames=N, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    frames = _frames()
    trk = Tracker(SwitchBackend(), lambda: make_policy(MemoryConfig(policy="sam2long")), info)
    trk.prompt(frames[0], Prompt(0, 1, mask=np.ones((H, W), bool)))
    pid = trk.start_pass(1, 0, 1)
    trk.step(frames[1], [pid])
    with pytest.raises(PromptError, match="sam2long: a correction on a tracked frame"):
        trk.attend(pid, frames[2])
    trk.close()


def test_the_session_refuses_a_correction_before_replaying_its_pass():
    """The engine refuses a correction only once the pass stands at the frame: the session,
    which would replay the pass from its prompted frame to get there (SAM2Long keeps no
    snapshots), refuses it before reading a frame."""
    from vosfx.errors import PromptError
    from vosfx.session.frames import ListFrames

    info = VideoInfo(
        path="", width=W, height=H, num_frames=N, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    frames = ListFrames(info, _frames())
    memory = MemoryConfig(policy="sam2long")
    with ClipSession(_Engine(SwitchBackend()), info, memory, frames=frames) as s:
        s.add_prompt(Prompt(0, 1, mask=np.ones((H, W), bool)))
        s.track()
        frames.gets.clear()
        click = Prompt(7, 1, points=np.array([[10.0, 10.0]]), labels=np.array([1]))
        with pytest.raises(PromptError, match="sam2long: a correction on a tracked frame"):
            s.add_prompt(click)
        assert (s.stats["replayed"], frames.gets) == (0, [])
        assert s.prompted_frames(1) == [0] and s.stale() == []
