"""A real-valued stand-in for SAM 2's rotary attention, used only when exporting to ONNX.

``sam2.modeling.sam.transformer.RoPEAttention`` rotates queries and keys with complex tensors
(``torch.view_as_complex`` / ``torch.polar``), which ONNX has no type for, and it slices the
keys with a Python ``int`` (``num_k_exclude_rope``), which would freeze the number of
object-pointer tokens into the graph. :class:`RealRoPEAttention` computes the same thing with
real arithmetic on the same cos/sin values and takes the pointer-token count as a tensor:

- a complex product ``(a + ib)(cos + i sin)`` on consecutive feature pairs ``(a, b)`` is
  ``(a cos - b sin, a sin + b cos)``; the cos/sin tables are the real and imaginary parts of
  SAM 2's own ``freqs_cis`` (the same float32 numbers);
- memory keys repeat the query table ``r = (Nk - n_ptr) / Nq`` times (``rope_k_repeat``);
  the ``n_ptr`` trailing pointer keys get angle 0 (cos 1, sin 0), which leaves them exactly
  unchanged, as SAM 2's slice does;
- with one head (every SAM 2 memory attention) the same products are written
  ``x·cos2 + swap(x)·sin2`` on (B, N, C) tokens, with ``swap(x)`` from a projection by the
  row-swapped weight: no head axis, no pair split and stack, no key table per layer (fewer
  ops: faster on OpenVINO; the same float32 results up to summation order).

:func:`real_rope_memory_attention` deep-copies a ``MemoryAttention`` and swaps each layer's
attention modules for this one (the loaded model and the ``sam2`` package are untouched). The
weights are shared by reference to the copies' own ``nn.Linear`` modules.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:
    from sam2.modeling.memory_attention import MemoryAttention
    from sam2.modeling.sam.transformer import RoPEAttention


# bound at import: ImageEncoderExport redirects F.scaled_dot_product_attention to this module's
# fused op while it traces, and the op's own forward must still reach torch's kernel
_SDPA = F.scaled_dot_product_attention


def tokens(x: torch.Tensor) -> torch.Tensor:
    """(B, H, N, D) heads -> (B, N, H*D) tokens."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class _FusedAttention(torch.autograd.Function):
    """Scaled dot-product attention over (B, N, H*D) tokens that exports as ONNX Runtime's
    fused ``com.microsoft.MultiHeadAttention`` (on CPU a flash-style kernel that never holds
    the whole Nq x Nk score matrix: 470 MB per layer at 1024 px with 7 memories)."""

    @staticmethod
    def forward(ctx, q, k, v, num_heads: int):
        b, nq, c = q.shape
        nk, cv = k.shape[1], v.shape[2]
        h = num_heads
        out = _SDPA(
            q.reshape(b, nq, h, c // h).transpose(1, 2),
            k.reshape(b, nk, h, c // h).transpose(1, 2),
            v.reshape(b, nk, h, cv // h).transpose(1, 2),
        )
        return out.transpose(1, 2).reshape(b, nq, cv)

    @staticmethod
    def symbolic(g, q, k, v, num_heads: int):  # pragma: no cover - runs inside the exporter
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=num_heads)
        out.setType(q.type().with_sizes([None, None, None]))
        return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, num_heads: int = 1):
    """``softmax(q k^T / sqrt(D)) v`` on (B, N, H*D) tokens; exported as the fused op."""
    return _FusedAttention.apply(q, k, v, num_heads)


class RealRoPEAttention(nn.Module):
    """Same inputs, weights and outputs as a ``RoPEAttention``; no complex numbers.

    ``q`` (B, Nq, C), ``k``/``v`` (B, Nk, Ckv) -> (B, Nq, C). ``n_exclude`` (a 0-d or (1,)
    int64 tensor, or an int) is set by the caller before ``forward``: how many trailing keys
    get no rotation (object pointers).
    """

    cos: torch.Tensor  # (Nq, D/2) float32, a buffer
    sin: torch.Tensor  # (Nq, D/2) float32, a buffer
    cos2: torch.Tensor  # (Nq, D) float32, a buffer: cos for both members of each pair
    sin2: torch.Tensor  # (Nq, D) float32, a buffer: (-sin, sin) on each pair
    swap: torch.Tensor  # (D,) int64, a buffer: each feature pair's two indices exchanged

    def __init__(self, attn: RoPEAttention) -> None:
        super().__init__()
        self.q_proj, self.k_proj = attn.q_proj, attn.k_proj
        self.v_proj, self.out_proj = attn.v_proj, attn.out_proj
        self.num_heads = int(attn.num_heads)
        self.rope_k_repeat = bool(attn.rope_k_repeat)
        freqs = attn.freqs_cis.detach().cpu()  # (Nq, D/2) complex64
        self.register_buffer("cos", freqs.real.contiguous(), persistent=False)
        self.register_buffer("sin", freqs.imag.contiguous(), persistent=False)
        # the one-head rotation's tables, (Nq, D): cos repeated for both members of a pair;
        # sin with the first member's sign flipped, so that x·cos2 + swap(x)·sin2 is
        # (a cos - b sin, a sin + b cos) on each pair (a, b)
        cos2 = self.cos.repeat_interleave(2, dim=-1)
        sin2 = torch.stack((-self.sin, self.sin), dim=-1).flatten(-2)
        self.register_buffer("cos2", cos2.contiguous(), persistent=False)
        self.register_buffer("sin2", sin2.contiguous(), persistent=False)
        d = cos2.shape[-1]
        self.register_buffer(
            "swap", torch.arange(d).view(-1, 2).flip(-1).reshape(-1), persistent=False
        )
        self.n_exclude: torch.Tensor | int = 0
        # set by the caller for one forward of all the layers: the keys' rotation tables
        # depend only on the key count and n_exclude, the same in every layer
        self.tables: dict | None = None

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    @staticmethod
    def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
        """x (B, H, N, D) with pairs on the last axis; cos/sin (N, D/2)."""
        pairs = x.reshape(*x.shape[:-1], -1, 2)  # (B, H, N, D/2, 2)
        a, b = pairs[..., 0], pairs[..., 1]
        return torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1).flatten(3)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        if self.num_heads == 1:
            return self._one_head(q, k, v)
        q = self._heads(self.q_proj(q))  # (B, H, Nq, D)
        k = self._heads(self.k_proj(k))  # (B, H, Nk, D)
        v = self._heads(self.v_proj(v))
        q = self._rotate(q, self.cos, self.sin)
        cos_k, sin_k = self.cos, self.sin
        if self.rope_k_repeat:
            cos_k, sin_k = self._key_tables(cos_k, sin_k, k.shape[-2], q.shape[-2])
        k = self._rotate(k, cos_k, sin_k)
        out = attention(tokens(q), tokens(k), tokens(v), self.num_heads)  # (B, Nq, H*D)
        return self.out_proj(out)

    def _key_tables(
        self, cos: torch.Tensor, sin: torch.Tensor, nk: int, nq: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The query tables (Nq, d) tiled over Nk memory keys: key i < n_rope takes row
        i % Nq (SAM 2 tiles the table r times); the n_exclude pointer keys after them get
        angle 0 (cos 1, sin 0). Gather + where keeps Nk and the pointer count dynamic in the
        exported graph."""
        n_excl = torch.as_tensor(self.n_exclude, dtype=torch.int64).reshape(())
        idx = torch.arange(nk, device=cos.device)  # (Nk,)
        rope = (idx < nk - n_excl)[:, None]  # (Nk, 1)
        rows = idx % nq
        return (
            torch.where(rope, cos.index_select(0, rows), 1.0),
            torch.where(rope, sin.index_select(0, rows), 0.0),
        )

    def _one_head(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """The one-head case (every SAM 2 memory attention) on (B, N, C) tokens as they are:
        no head axis to move, and the rotation as ``x · cos2 + swap(x) · sin2`` (no pairs
        split and stacked again). ``swap`` exchanges each feature pair; it is taken from a
        second projection by the row-swapped weight (a Gather of the weight that the runtime
        folds once), so the graph never copies a key tensor to permute it."""
        q = self._rotate_flat(q, self.q_proj, self.cos2, self.sin2)
        cos2, sin2 = self.cos2, self.sin2
        if self.rope_k_repeat:
            shared = self.tables if self.tables is not None else {}
            if "k" not in shared:
                shared["k"] = self._key_tables(cos2, sin2, k.shape[-2], q.shape[-2])  # (Nk, D)
            cos2, sin2 = shared["k"]
        k = self._rotate_flat(k, self.k_proj, cos2, sin2)
        # one head: attention rows sum to 1, so softmax(qk) @ (v W^T + b) equals
        # (softmax(qk) @ v) W^T + b; attending the raw 64-channel memory does the value
        # product in 64 channels instead of 256 (1/4 of its multiply-adds)
        return self.out_proj(self.v_proj(attention(q, k, v)))

    def _rotate_flat(
        self, x: torch.Tensor, proj: nn.Linear, cos2: torch.Tensor, sin2: torch.Tensor
    ) -> torch.Tensor:
        """``proj(x)`` rotated pairwise: (B, N, Cin) -> (B, N, D); cos2/sin2 (N, D)."""
        swapped = F.linear(x, proj.weight[self.swap], proj.bias[self.swap])
        return proj(x) * cos2 + swapped * sin2


def real_rope_memory_attention(
    memory_attention: MemoryAttention,
) -> tuple[MemoryAttention, list[RealRoPEAttention]]:
    """A deep copy of ``memory_attention`` whose ``RoPEAttention`` modules are replaced by
    :class:`RealRoPEAttention`; returns (copy, the replaced modules that take ``n_exclude``).

    The copy's layers no longer see a ``RoPEAttention``, so ``MemoryAttention.forward`` passes
    them no ``num_k_exclude_rope``: the caller sets ``n_exclude`` on the returned modules.
    """
    from sam2.modeling.sam.transformer import RoPEAttention

    clone = copy.deepcopy(memory_attention)
    swapped: list[RealRoPEAttention] = []
    for layer in clone.layers:
        for name in ("self_attn", "cross_attn_image"):
            attn = getattr(layer, name)
            if isinstance(attn, RoPEAttention):
                real = RealRoPEAttention(attn)
                setattr(layer, name, real)
                swapped.append(real)
    return clone, swapped
