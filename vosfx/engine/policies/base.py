"""The memory bank's metadata and the policies that decide what each frame attends to.

A policy sees metadata only (frame index, shot id, prompt flag, scores) and never a tensor: the
bank keeps the tensors, the backend consumes them. That keeps every policy a small, pure,
table-testable object and keeps the exported graphs free of control flow.

Life of one frame t for one object (the tracker drives it):

a. ``policy.select(t, shot_id, bank)`` -> :class:`Selection`: which stored frames' mask
   memories to attend, each with its temporal position slot, and which frames' object
   pointers, each with its signed frame distance.
b. The backend runs memory attention + decoder on that selection.
c. ``policy.observe(entry, bank)`` -> :class:`Decision`: whether frame t's memory is stored,
   and which stored frames are promoted into (or dropped from) the conditioning memory.
d. The bank applies the decision and drops every entry that ``policy.retain`` no longer needs,
   so its size never depends on the clip's length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class MemoryEntry:
    """Metadata of one frame's memory for one object.

    ``quality`` is the RCMS reliability score: sigmoid(object_score_logit) x max predicted IoU
    x mean sigmoid(logits) over pixels with positive logits (0 when none are positive).
    """

    frame_index: int
    shot_id: int = 0
    is_prompt: bool = False  # the user prompted this frame (never evicted)
    promoted: bool = False  # promoted into conditioning memory by a policy
    object_score_logit: float = 0.0
    iou: float = 0.0
    quality: float = 0.0

    @property
    def is_cond(self) -> bool:
        return self.is_prompt or self.promoted


@dataclass(frozen=True)
class Selection:
    """What frame t attends to.

    ``masks``: (frame_index, t_pos) pairs in attention order. t_pos = 0 for conditioning
    memory; 1 .. num_maskmem-1 for recent frames (num_maskmem-1 is the frame just before).
    The backend adds ``maskmem_tpos_enc[num_maskmem - t_pos - 1]`` as SAM 2 does.
    ``pointers``: (frame_index, t_diff) pairs in order; t_diff is the signed distance used for
    the pointer's temporal encoding, normalised by ``pointer_t_diff_max``.
    """

    masks: tuple[tuple[int, int], ...]
    pointers: tuple[tuple[int, int], ...]
    pointer_t_diff_max: int


@dataclass(frozen=True)
class Decision:
    """What to do after frame t was tracked.

    ``store``: keep frame t's memory in the bank (as recent memory, or as conditioning when
    ``as_cond``). ``promote``: stored frame indices to move into conditioning memory, in the
    order they were chosen. ``demote``: conditioning frames that leave (cap reached; prompts
    never do). ``binarize_memory``: encode frame t's memory from its mask thresholded at 0,
    as SAM 2 encodes frames the user interacted with (DAM4SAM stores its distractor-resolving
    frames that way).
    """

    store: bool = True
    as_cond: bool = False
    promote: tuple[int, ...] = ()
    demote: tuple[int, ...] = ()
    event: str = ""  # "disappeared", "cut", ... for the sidecar report
    binarize_memory: bool = False


class BankView(Protocol):
    """Read-only view a policy gets of one object's bank."""

    @property
    def entries(self) -> dict[int, MemoryEntry]: ...  # frame_index -> entry, all stored

    @property
    def num_maskmem(self) -> int: ...  # 7 for SAM 2

    @property
    def max_obj_ptrs(self) -> int: ...  # 16 for SAM 2

    @property
    def num_frames(self) -> int: ...  # clip length (SAM 2 caps pointers by it)


class MemoryPolicy(Protocol):
    name: str

    def select(self, frame_index: int, shot_id: int, bank: BankView) -> Selection: ...

    def observe(self, entry: MemoryEntry, bank: BankView) -> Decision: ...

    def retain(self, frame_index: int, bank: BankView) -> set[int]:
        """Frame indices whose memory may still be attended from ``frame_index + 1`` on;
        everything else is dropped from the bank."""
        ...


@dataclass
class PolicyLog:
    """What a policy did, for the sidecar: promoted frames and events per frame."""

    promoted: dict[int, list[int]] = field(default_factory=dict)  # at frame -> promoted frames
    events: dict[int, str] = field(default_factory=dict)


def closest_cond_frames(
    frame_index: int, cond_frames: list[int], max_cond_frames: int = -1
) -> tuple[list[int], list[int]]:
    """(selected, unselected) conditioning frames, SAM 2's ``select_closest_cond_frames``
    rule over frame indices:

    a. all of them when ``max_cond_frames`` is -1 or not exceeded; otherwise
    b. the closest frame before ``frame_index`` and the closest at or after it, then
    c. the others closest in time, until ``max_cond_frames`` are chosen.
    """
    if max_cond_frames == -1 or len(cond_frames) <= max_cond_frames:
        return list(cond_frames), []
    chosen: list[int] = []
    before = [f for f in cond_frames if f < frame_index]
    after = [f for f in cond_frames if f >= frame_index]
    if before:
        chosen.append(max(before))
    if after:
        chosen.append(min(after))
    rest = sorted((f for f in cond_frames if f not in chosen), key=lambda f: abs(f - frame_index))
    chosen += rest[: max(max_cond_frames - len(chosen), 0)]
    # SAM 2's order: before, after, then by distance (it matters only for summation order)
    return chosen, [f for f in cond_frames if f not in chosen]
