"""One object's memory bank: stored frames' tensors plus their metadata.

The bank holds only what its policy says can still be attended (``MemoryPolicy.retain``), so its
size depends on the policy's window and conditioning cap, never on the clip's length.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from vosfx.engine.policies.base import Decision, MemoryEntry, MemoryPolicy
from vosfx.errors import VosfxError


class MemoryBank:
    """Per-object store: frame index -> (:class:`MemoryEntry`, mask memory, object pointer).

    ``maskmem`` is the backend-native (1, 64, g, g) memory feature and ``obj_ptr`` the (1, 256)
    object pointer. Implements the ``BankView`` a policy reads.
    """

    def __init__(self, num_maskmem: int, max_obj_ptrs: int, num_frames: int) -> None:
        self._num_maskmem = num_maskmem
        self._max_obj_ptrs = max_obj_ptrs
        self._num_frames = num_frames
        self._entries: dict[int, MemoryEntry] = {}
        self._values: dict[int, tuple[Any, Any]] = {}
        self.peak_entries = 0

    # --- BankView -----------------------------------------------------------------------
    @property
    def entries(self) -> dict[int, MemoryEntry]:
        return self._entries

    @property
    def num_maskmem(self) -> int:
        return self._num_maskmem

    @property
    def max_obj_ptrs(self) -> int:
        return self._max_obj_ptrs

    @property
    def num_frames(self) -> int:
        return self._num_frames

    # --- storage ------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._entries)

    def maskmem(self, frame_index: int) -> Any:
        return self._get(frame_index)[0]

    def obj_ptr(self, frame_index: int) -> Any:
        return self._get(frame_index)[1]

    def _get(self, frame_index: int) -> tuple[Any, Any]:
        try:
            return self._values[frame_index]
        except KeyError:
            raise VosfxError(
                f"memory bank: the policy selected frame {frame_index}, which is "
                f"not stored (stored: {sorted(self._values)})"
            ) from None

    def apply(self, entry: MemoryEntry, maskmem: Any, obj_ptr: Any, decision: Decision) -> None:
        """Store frame ``entry.frame_index`` if the decision says so, then promote/demote."""
        if decision.store:
            if decision.as_cond and not entry.is_cond:
                entry = replace(entry, promoted=True)
            self._entries.pop(entry.frame_index, None)  # a re-prompted frame moves to the end
            self._entries[entry.frame_index] = entry
            self._values[entry.frame_index] = (maskmem, obj_ptr)
        for f in decision.promote:
            if f in self._entries:
                self._entries[f] = replace(self._entries[f], promoted=True)
        for f in decision.demote:
            if f in self._entries and not self._entries[f].is_prompt:
                self._entries[f] = replace(self._entries[f], promoted=False)
        self.peak_entries = max(self.peak_entries, len(self._entries))

    def prune(self, policy: MemoryPolicy, frame_index: int) -> list[int]:
        """Drop every frame ``policy.retain`` does not keep; returns the dropped frames."""
        keep = policy.retain(frame_index, self)
        dropped = [f for f in self._entries if f not in keep]
        for f in dropped:
            del self._entries[f]
            del self._values[f]
        return dropped

    def copy(self) -> MemoryBank:
        """A bank with the same entries, its own tables: the arrays are shared (the bank never
        changes one in place), so a copy costs a few dicts, not the memories."""
        bank = MemoryBank(self._num_maskmem, self._max_obj_ptrs, self._num_frames)
        bank._entries, bank._values = dict(self._entries), dict(self._values)
        bank.peak_entries = self.peak_entries
        return bank

    def arrays(self) -> list[Any]:
        """The stored memories and pointers (for a caller that counts what copies share)."""
        return [v for pair in self._values.values() for v in pair]

    def nbytes(self, sizeof) -> int:
        """Bytes held, with ``sizeof(value) -> int`` from the backend."""
        return sum(sizeof(m) + sizeof(p) for m, p in self._values.values())
