"""SAM 2's own memory policy, rule for rule."""

from __future__ import annotations

from vosfx.engine.policies.base import (
    BankView,
    Decision,
    MemoryEntry,
    PolicyLog,
    Selection,
    closest_cond_frames,
)


class Sam2Policy:
    """SAM 2's own memory (``SAM2Base._prepare_memory_conditioned_features``, eval mode, as in
    every SAM 2.1 config: temporal stride 1, pointers only from the past, signed t_diff).

    select(t): (a) the conditioning frames (all, or the ``max_cond_frames`` closest), t_pos 0,
    in the order they were stored; (b) the stored non-conditioning frames t-(n-1) .. t-1
    (n = ``num_maskmem``), t_pos 1 .. n-1; (c) pointers of the selected conditioning frames at
    or before t, t_diff = t - frame; (d) pointers of stored non-conditioning frames t-1 ..
    t-(P-1), P = min(num_frames, max_obj_ptrs), t_diff 1 .. P-1; ``pointer_t_diff_max`` = P-1.
    Unselected conditioning frames stand in for recent frames, as in SAM 2.
    observe: store every frame; prompted frames as conditioning. retain: conditioning frames
    and the window of the last max(n-1, P-1) frames.
    """

    name = "sam2"

    def __init__(self, max_cond_frames: int = -1) -> None:
        self.max_cond_frames = max_cond_frames
        self.log = PolicyLog()

    @staticmethod
    def _max_ptrs(bank: BankView) -> int:
        return min(bank.num_frames, bank.max_obj_ptrs) if bank.num_frames > 0 else bank.max_obj_ptrs

    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection:
        entries = bank.entries
        cond = [f for f, e in entries.items() if e.is_cond]
        selected, unselected = closest_cond_frames(frame_index, cond, self.max_cond_frames)
        recent = {f for f, e in entries.items() if not e.is_cond} | set(unselected)
        n = bank.num_maskmem
        masks = [(f, 0) for f in selected]
        masks += [
            (frame_index - (n - p), p) for p in range(1, n) if frame_index - (n - p) in recent
        ]
        max_ptrs = self._max_ptrs(bank)
        pointers = [(f, frame_index - f) for f in selected if f <= frame_index]
        for t_diff in range(1, max_ptrs):
            f = frame_index - t_diff
            if f < 0 or (bank.num_frames > 0 and f >= bank.num_frames):
                break
            if f in recent:
                pointers.append((f, t_diff))
        return Selection(
            masks=tuple(masks), pointers=tuple(pointers), pointer_t_diff_max=max_ptrs - 1
        )

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision:
        return Decision(store=True, as_cond=entry.is_prompt)

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        depth = max(bank.num_maskmem - 1, self._max_ptrs(bank) - 1)
        return {
            f
            for f, e in bank.entries.items()
            if e.is_cond or frame_index + 1 - depth <= f <= frame_index
        }
