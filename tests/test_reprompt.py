"""Re-prompt refinement: the drop rule, the prompt taken from the last reliable mask, and the
tracker keeping the better of the two outputs (recorded as events)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np

from vosfx.engine.backend import TrackOutput
from vosfx.engine.policies import Sam2Policy
from vosfx.engine.reprompt import Reprompter
from vosfx.engine.tracker import Tracker
from vosfx.types import Frame, Prompt, VideoInfo

H, W, S = 24, 32, 64  # video, model input; low-res side 16


def _square(x0, y0, size, value=4.0):
    low = np.full((16, 16), -4.0, np.float32)
    low[y0 : y0 + size, x0 : x0 + size] = value
    return low


class ScriptedBackend:
    """Tracking outputs follow ``shrink`` (frames whose mask collapses to 2x2 px); a prompted
    decode returns ``prompted_iou`` for an 8x8 square where the box says."""

    image_size, num_maskmem, max_obj_ptrs, device = S, 7, 16, "cpu"
    multimask_output_in_sam = multimask_output_for_tracking = True
    multimask_min_pt_num, multimask_max_pt_num = 0, 1
    use_mask_input_as_output_without_sam = binarize_mask_from_pts_for_mem_enc = True

    def __init__(self, shrink=(), prompted_iou=0.95):
        self.shrink, self.prompted_iou = set(shrink), prompted_iou
        self.t = -1
        self.prompts = []

    def encode_image(self, rgb8, interrupt=None):
        self.t += 1
        return {"t": self.t}

    def track(self, req):
        if req.point_coords is not None:
            self.prompts.append(
                (
                    req.features["t"],
                    req.point_coords.copy(),
                    req.point_labels.copy(),
                    len(req.memories or ()),
                )
            )
            low = _square(4, 4, 8)
            return TrackOutput(
                np.stack([low] * 3),
                np.full(3, 0.5, np.float32),
                low,
                self.prompted_iou,
                3.0,
                ["p"] * 3,
                "prompted",
            )
        small = req.features["t"] in self.shrink
        low = _square(4, 4, 2 if small else 8)
        multi = np.stack([low, low, low])
        return TrackOutput(
            multi, np.array([0.9, 0.5, 0.4], np.float32), low, 0.9, 3.0, ["p0", "p1", "p2"], "ps"
        )

    def mask_as_output(self, features, mask):
        return _square(4, 4, 8, 10.0), 10.0, "pm"

    def encode_memory(self, features, low_res, score, binarize):
        return ("mem", features["t"], int((low_res > 0).sum()))

    def nbytes(self, value):
        return 8


def _run(backend, n=12, reprompt=True):
    info = VideoInfo(
        path="", width=W, height=H, num_frames=n, fps=Fraction(25), time_base=Fraction(1, 25)
    )
    trk = Tracker(backend, Sam2Policy(), info, fill_hole_area=0, reprompt=reprompt)
    frame = lambda t: Frame(t, np.zeros((H, W, 3), np.uint8), t, Fraction(1, 25))
    trk.prompt(frame(0), Prompt(0, 1, mask=np.ones((H, W), bool)))
    pid = trk.start_pass(1, 0, 1)
    results = [trk.step(frame(t), [pid])[0] for t in range(1, n)]
    trk.end_pass(pid)
    return trk, results


def test_drop_rule_needs_history_and_a_sharp_fall():
    rp = Reprompter()
    assert not rp.dropped(0.0, 0)  # nothing reliable yet
    for t in range(3):
        rp.record(t, _square(4, 4, 8), 0.8, reliable=True)
    assert not rp.dropped(0.7, 60)  # a little lower: not sharp
    assert rp.dropped(0.3, 64)  # quality below half the mean (0.8)
    assert rp.dropped(0.8, 20)  # area below half the mean (64)


def test_prompt_is_a_box_and_the_deepest_point_in_model_pixels():
    rp = Reprompter()
    rp.record(5, _square(4, 6, 8), 0.9, reliable=True)
    coords, labels = rp.prompt(S)  # low-res 16 -> model 64: x4
    assert list(labels) == [2, 3, 1] and rp.reliable_frame == 5
    np.testing.assert_array_equal(coords[:2], [[16, 24], [48, 56]])
    x, y = coords[2]
    assert 16 < x < 48 and 24 < y < 56


def test_collapsed_frame_is_reprompted_and_the_better_mask_kept():
    backend = ScriptedBackend(shrink={6})
    trk, results = _run(backend)
    by_frame = {r.frame_index: r for r in results}
    assert [p[0] for p in backend.prompts] == [6]  # only the collapsed frame
    assert backend.prompts[0][3] > 0  # prompted with the memory the frame attended
    info = by_frame[6].info["reprompt"]
    assert (
        info["kept"] and info["from_frame"] == 5 and info["quality_after"] > info["quality_before"]
    )
    assert int((by_frame[6].logits > 0).sum()) == 64  # the full square, not the 2x2 collapse
    events = trk.report()["1"]["events"]
    assert list(events) == ["6"] and events["6"].startswith("reprompt kept")
    assert all("reprompt" not in by_frame[t].info for t in by_frame if t != 6)


def test_worse_reprompt_is_rejected_and_recorded():
    backend = ScriptedBackend(shrink={6}, prompted_iou=0.01)
    trk, results = _run(backend)
    r6 = {r.frame_index: r for r in results}[6]
    assert not r6.info["reprompt"]["kept"]
    assert int((r6.logits > 0).sum()) == 4  # the tracked output stays
    assert trk.report()["1"]["events"]["6"].startswith("reprompt rejected")


def test_off_by_default():
    backend = ScriptedBackend(shrink={6})
    _run(backend, reprompt=False)
    assert backend.prompts == []


def test_cli_flag_sets_the_config_key():
    from vosfx.cli.matte import _overrides

    assert _overrides({"reprompt": True}) == {"memory": {"reprompt": True}}
    assert _overrides({"reprompt": None}) == {}
