"""The memory attention's inputs for the ONNX backend, assembled in numpy as SAM 2 orders them.

For one request: the mask memories' tokens (kept as bfloat16 bits, (g*g, 64) each) in selection
order, then each object pointer split into ``hidden / mem`` tokens of ``mem`` channels (4 x 64
for SAM 2's 256-d pointer), with their position encodings (a memory's: the memory encoder's
constant position encoding plus the temporal encoding of its slot; a pointer's: the
``pointer_pos`` graph's encoding of its signed frame distance, cached) and, for SAM2Long, each
token's key scale. What :class:`~vosfx.engine.torch_backend.TorchBackend` does in torch.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from vosfx.engine.backend import MemoryItem, PointerItem, from_bf16_bits
from vosfx.errors import BackendError


class MemoryTokens:
    """``hidden``, ``mem``: the model's hidden and memory dims (256, 64). ``tpos``:
    ``maskmem_tpos_enc`` (num_maskmem, 1, 1, mem). ``pointer_pos(t_norm (P,)) -> (P, mem)``:
    the pointer encoding graph."""

    def __init__(
        self,
        hidden: int,
        mem: int,
        tpos: np.ndarray,
        pointer_pos: Callable[[np.ndarray], np.ndarray],
    ) -> None:
        self.mem = mem
        self.per_ptr = hidden // mem if mem < hidden else 1  # tokens per object pointer
        self._tpos = np.asarray(tpos, np.float32)
        self._pointer_graph = pointer_pos
        self._mem_pos: dict[int, np.ndarray] = {}  # t_pos -> (g*g, 1, mem)
        self._ptr_pos: dict[tuple[int, int], np.ndarray] = {}  # (t_diff, max) -> (4, 1, mem)
        self._maskmem_pos: np.ndarray | None = None  # (g*g, 1, mem), constant

    def set_maskmem_pos(self, pos: np.ndarray) -> None:
        """The memory encoder's position encoding, (B, mem, g, g): constant, kept once."""
        if self._maskmem_pos is None:
            self._maskmem_pos = pos[0].reshape(pos.shape[1], -1).T[:, None, :].copy()

    def assemble(
        self, memories: list[MemoryItem], pointers: list[PointerItem], t_diff_max: int
    ) -> tuple[np.ndarray, np.ndarray, int]:
        """(M, 1, mem) float32 memory tokens and position encodings in SAM 2's order, and the
        number of pointer tokens at the end. One copy into each buffer."""
        per_ptr = self.per_ptr
        n_sp = sum(int(m.maskmem.shape[0]) for m in memories)
        total = n_sp + per_ptr * len(pointers)
        tok = np.empty((total, 1, self.mem), np.float32)
        pos = np.empty((total, 1, self.mem), np.float32)
        i = 0
        for item in memories:
            n = item.maskmem.shape[0]
            tok[i : i + n, 0] = from_bf16_bits(item.maskmem)
            pos[i : i + n] = self._memory_pos(item.t_pos)
            i += n
        for pointer in pointers:
            # (1, 256) -> (4, 1, 64): the pointer as 4 memory tokens (mem_dim 64 < 256)
            tok[i : i + per_ptr] = np.asarray(pointer.obj_ptr, np.float32).reshape(per_ptr, 1, -1)
            pos[i : i + per_ptr] = self._pointer_pos(pointer.t_diff, t_diff_max)
            i += per_ptr
        return tok, pos, per_ptr * len(pointers)

    def key_scale(
        self, memories: list[MemoryItem], pointers: list[PointerItem], total: int
    ) -> np.ndarray:
        """(M,) float32 per-token key scales in :meth:`assemble`'s order (ones unless a
        policy scales an item: SAM2Long)."""
        out = np.ones(total, np.float32)
        if all(m.key_scale == 1.0 for m in memories) and all(p.key_scale == 1.0 for p in pointers):
            return out
        i = 0
        for item in memories:
            n = int(item.maskmem.shape[0])
            out[i : i + n] = item.key_scale
            i += n
        for pointer in pointers:
            out[i : i + self.per_ptr] = pointer.key_scale
            i += self.per_ptr
        return out

    def _memory_pos(self, t_pos: int) -> np.ndarray:
        pos = self._mem_pos.get(t_pos)
        if pos is None:
            if self._maskmem_pos is None:
                raise BackendError("memory position requested before any memory was encoded")
            num_maskmem = self._tpos.shape[0]
            pos = self._mem_pos[t_pos] = self._maskmem_pos + self._tpos[num_maskmem - t_pos - 1]
        return pos

    def _pointer_pos(self, t_diff: int, t_diff_max: int) -> np.ndarray:
        key = (t_diff, t_diff_max)
        pos = self._ptr_pos.get(key)
        if pos is None:
            t = np.array([t_diff], np.float32) / np.float32(t_diff_max)
            p = self._pointer_graph(t)  # (1, mem)
            pos = self._ptr_pos[key] = np.repeat(p[:, None, :], self.per_ptr, axis=0)
        return pos
