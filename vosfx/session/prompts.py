"""A clip session's prompts and which passes of the rule they leave stale (:class:`PromptBook`).

The book holds each object's prompt per prompted frame, the prompts a sweep still has to
compute when it reaches their frames (a pipeline's, :meth:`ClipSession.set_prompts`), and the
passes of the rule (:mod:`vosfx.session.plan`) already computed. Each prompted frame has a
version, bumped whenever its prompt is set or removed or its output computed; a pass is up to
date while it is still in the plan and its anchor and neighbour have the versions it ran with.
So a prompt makes stale only its object's passes between its neighbouring prompted frames.
An output that depends on its prompt's content alone takes back the version an identical
prompt's output had there (:meth:`PromptBook.computed`): an edit undone leaves nothing stale
that it had not overwritten.

A correction (``Prompt.correction``, rule d) continues the pass from the object's previous
prompted frame, so its output depends on that frame's: the book keeps the previous prompted
frame and version each correction was computed on (its basis), and a correction whose basis
has changed is computed again (pending, its version bumped, so the passes from it are stale
too, and the corrections after it in turn).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from vosfx.errors import PromptError
from vosfx.session.plan import PassPlan, plan_object
from vosfx.types import Prompt


class StateKey(NamedTuple):
    """What a pass's state after a frame depends on (its frames' range does not change it):
    the key of its snapshots (session/checkpoints.py)."""

    obj_id: int
    anchor: int
    direction: int
    neighbour: int | None
    anchor_version: int | None
    neighbour_version: int | None


class PassKey(NamedTuple):
    """A pass of the rule as computed: its plan and its prompted frames' versions."""

    obj_id: int
    anchor: int
    direction: int
    neighbour: int | None
    start: int
    stop: int
    anchor_version: int | None
    neighbour_version: int | None


class PromptBook:
    """The prompts of one session over the frames [``start``, ``end``), and its passes
    computed so far; ``backward``: the rule tracks backwards (``[memory] track_backward``)."""

    def __init__(self, start: int, end: int, *, backward: bool) -> None:
        self.start, self.end, self.backward = start, end, backward
        self.by_object: dict[int, dict[int, Prompt]] = {}  # obj -> frame -> prompt
        self.pending: dict[int, list[Prompt]] = defaultdict(list)  # frame -> to compute
        self._version: dict[tuple[int, int], int] = {}  # (obj, frame) -> anchor version
        self._counter = 0
        self._done: set[PassKey] = set()  # passes computed, with their anchors' versions
        # corrections as computed: (obj, frame) -> (previous prompted frame, its version),
        # None where there was none (computed as an ordinary prompt)
        self._basis: dict[tuple[int, int], tuple[int, int | None] | None] = {}
        # (obj, frame) -> digest of a prompt whose output depends on it alone -> the version
        # its output had (:meth:`computed`: an edit undone gets its version back)
        self._by_content: dict[tuple[int, int], dict[bytes, int]] = {}

    @property
    def obj_ids(self) -> tuple[int, ...]:
        return tuple(sorted(self.by_object))

    def prompts(self) -> list[Prompt]:
        return [
            p for obj in sorted(self.by_object) for _f, p in sorted(self.by_object[obj].items())
        ]

    def prompted_frames(self, obj_id: int) -> list[int]:
        return sorted(self.by_object.get(obj_id, {}))

    def defer(self, prompts: Iterable[Prompt]) -> None:
        """Prompts a sweep computes when it reaches their frames; later prompts for the same
        object and frame replace earlier."""
        for p in prompts:
            self.check(p)
            self.by_object.setdefault(p.obj_id, {})[p.frame_index] = p
            self.pending[p.frame_index] = [
                q for q in self.pending[p.frame_index] if q.obj_id != p.obj_id
            ] + [p]
            self.bump(p.obj_id, p.frame_index)
            self._overwritten(p.obj_id, range(p.frame_index, p.frame_index + 1))

    def put(self, prompt: Prompt) -> None:
        """``prompt``, whose output the caller has computed (and bumped): no sweep computes it
        again."""
        t, obj = prompt.frame_index, prompt.obj_id
        self.by_object.setdefault(obj, {})[t] = prompt
        self._overwritten(obj, range(t, t + 1))
        self.pending[t] = [q for q in self.pending.get(t, []) if q.obj_id != obj]

    def remove(self, obj_id: int, frame_index: int) -> None:
        """Drop the object's prompt on ``frame_index`` (the caller bumps its version once the
        frame's output is gone)."""
        frames = self.by_object.get(obj_id, {})
        if frame_index not in frames:
            raise PromptError(f"object {obj_id} has no prompt on frame {frame_index}")
        del frames[frame_index]
        self._basis.pop((obj_id, frame_index), None)
        self.pending[frame_index] = [
            q for q in self.pending.get(frame_index, []) if q.obj_id != obj_id
        ]

    def drop(self, obj_id: int) -> None:
        """The object's prompts, pending prompts and computed passes go."""
        self.by_object.pop(obj_id, None)
        for t in list(self.pending):
            self.pending[t] = [q for q in self.pending[t] if q.obj_id != obj_id]
        self._done = {k for k in self._done if k.obj_id != obj_id}
        self._basis = {k: v for k, v in self._basis.items() if k[0] != obj_id}
        self._by_content = {k: v for k, v in self._by_content.items() if k[0] != obj_id}

    # --- corrections (rule d) -------------------------------------------------------------
    def previous(self, obj_id: int, frame_index: int) -> int | None:
        """The object's prompted frame before ``frame_index`` in the range, if any."""
        before = [f for f in self.by_object.get(obj_id, {}) if self.start <= f < frame_index]
        return max(before, default=None)

    def _basis_now(self, obj_id: int, frame_index: int) -> tuple[int, int | None] | None:
        prev = self.previous(obj_id, frame_index)
        return None if prev is None else (prev, self._version.get((obj_id, prev)))

    def corrected(self, obj_id: int, frame_index: int) -> None:
        """The correction on ``frame_index`` has been computed on the current basis."""
        self._basis[(obj_id, frame_index)] = self._basis_now(obj_id, frame_index)

    def refresh_corrections(self) -> None:
        """Corrections whose previous prompted frame, or its output, changed since they were
        computed become pending again, their versions bumped (so the passes from them are
        stale), in frame order, so that a chain of corrections follows the first."""
        for obj in sorted(self.by_object):
            frames = self.by_object[obj]
            for f in sorted(frames):
                prompt = frames[f]
                if not prompt.correction or not self.start <= f < self.end:
                    continue
                waiting = any(q.obj_id == obj for q in self.pending.get(f, ()))
                if waiting:
                    continue
                key = (obj, f)
                if key in self._basis and self._basis[key] == self._basis_now(obj, f):
                    continue
                self.pending[f] = [*self.pending.get(f, []), prompt]
                self.bump(obj, f)

    def check(self, p: Prompt) -> None:
        if not self.start <= p.frame_index < self.end:
            raise PromptError(
                f"prompt for object {p.obj_id} on frame {p.frame_index} is "
                f"outside the frames being matted ({self.start}.."
                f"{self.end - 1})"
            )

    def bump(self, obj_id: int, frame_index: int) -> None:
        """The object's output on its prompted frame ``frame_index`` changed."""
        self._counter += 1
        self._version[(obj_id, frame_index)] = self._counter

    def computed(self, obj_id: int, frame_index: int, digest: bytes | None) -> None:
        """The object's output on its prompted frame was computed: a new version, or, where
        it depends on the prompt alone (``digest``, :func:`prompt_digest`) and a prompt with
        the same digest was computed there before, that computation's version again. So an
        edit undone (the studio's Undo, a point removed again in the OpenFX effect) leaves
        stale nothing its edit had not already overwritten: the passes computed with that
        version count as done while their frames hold what they computed."""
        key = (obj_id, frame_index)
        known = self._by_content.setdefault(key, {})
        if digest is not None and digest in known:
            self._version[key] = known[digest]
            return
        self.bump(obj_id, frame_index)
        if digest is not None:
            known[digest] = self._version[key]

    # --- passes -------------------------------------------------------------------------
    def _plan_object(self, obj_id: int) -> list[PassPlan]:
        frames = self.by_object.get(obj_id, {})
        return plan_object(
            obj_id,
            frames,
            self.start,
            self.end,
            backward=self.backward,
            corrections=[f for f, p in frames.items() if p.correction],
        )

    def plan(self) -> list[PassPlan]:
        """Every pass of the rule for the current prompts."""
        return [pl for obj in sorted(self.by_object) for pl in self._plan_object(obj)]

    def state_key(self, pl: PassPlan) -> StateKey:
        """What the pass's state depends on: the key of its snapshots."""
        k = self.key(pl)
        return StateKey(
            k.obj_id, k.anchor, k.direction, k.neighbour, k.anchor_version, k.neighbour_version
        )

    def key(self, pl: PassPlan) -> PassKey:
        """The pass as computed with its prompted frames' current versions."""
        return PassKey(
            pl.obj_id,
            pl.anchor,
            pl.direction,
            pl.neighbour,
            pl.frames.start,
            pl.frames.stop,
            self._version.get((pl.obj_id, pl.anchor)),
            None if pl.neighbour is None else self._version.get((pl.obj_id, pl.neighbour)),
        )

    def running(self, pl: PassPlan) -> None:
        """``pl`` is about to write its frames (a sweep that may be cancelled half-way)."""
        self._overwritten(pl.obj_id, pl.frames)

    def ran(self, pl: PassPlan) -> None:
        """``pl`` has been computed with the current prompts (after :meth:`running`)."""
        self._done.add(self.key(pl))

    def _overwritten(self, obj_id: int, frames: range) -> None:
        """The object's results on ``frames`` are no longer those of the passes computed
        before: those passes are not done any more, so that a plan that needs one of them
        again (a prompt removed) computes it again instead of trusting what is stored. A
        forward pass attending its anchor alone keeps its frames before ``frames`` (they do
        not depend on later ones): a correction ends the tail it continues there."""
        done = set()
        for k in self._done:
            if k.obj_id != obj_id or k.stop <= frames.start or frames.stop <= k.start:
                done.add(k)
            elif k.direction > 0 and k.neighbour is None and k.start < frames.start:
                done.add(k._replace(stop=frames.start))
        self._done = done

    def stale(self) -> list[PassPlan]:
        """The passes whose results are missing or out of date (after
        :meth:`refresh_corrections`: a correction to compute again makes its passes stale)."""
        self.refresh_corrections()
        return [pl for pl in self.plan() if not self._is_done(pl)]

    def _is_done(self, pl: PassPlan) -> bool:
        """Whether ``pl`` has been computed with the current prompts (:meth:`done_through`
        reaches its last frame)."""
        return self.done_through(pl) >= pl.frames.stop - 1

    def done_through(self, pl: PassPlan) -> int:
        """The last frame of ``pl`` computed with the current prompts, counted from its start
        (the frame before its first: nothing). A pass counts as computed as planned; a forward
        pass attending its anchor alone (whose frames do not depend on later ones) also up to
        where any run of it from the same start went (a longer run: a correction after it
        ended the tail it continues; a shorter one: a sweep stopped part-way,
        :meth:`Sweep.close`, recorded how far)."""
        k = self.key(pl)
        if k in self._done:
            return pl.frames.stop - 1
        if pl.direction < 0 or pl.neighbour is not None:
            return pl.frames.start - 1
        stops = [d.stop for d in self._done if d._replace(stop=k.stop) == k]
        return min(max(stops, default=pl.frames.start), pl.frames.stop) - 1

    def all_computed(self) -> None:
        """Every prompt counted as computed (a new version each, none pending), every
        correction on its current basis and every pass of the plan as done: results taken
        from elsewhere (``ClipSession.adopt``)."""
        for p in self.prompts():
            self.put(p)
            self.bump(p.obj_id, p.frame_index)
        for p in self.prompts():
            if p.correction:
                self.corrected(p.obj_id, p.frame_index)
        for pl in self.plan():
            self.ran(pl)

    def covering(self, obj_id: int, frame_index: int) -> PassPlan | None:
        """The pass of the plan whose up-to-date result the object has on ``frame_index``
        (the pass computed, or computed up to there), if any."""
        for pl in self._plan_object(obj_id):
            if frame_index in pl.frames and frame_index <= self.done_through(pl):
                return pl
        return None


def content_digest(prompt: Prompt) -> bytes:
    """A prompt's content: its object, frame, clicks, box, mask, prior and whether it is a
    correction (two prompts with the same digest are the same prompt)."""
    h = hashlib.blake2b(digest_size=16)
    h.update(f"{prompt.obj_id} {prompt.frame_index} {prompt.correction}".encode())
    for name in ("mask", "points", "labels", "box", "prior"):
        value = getattr(prompt, name)
        if value is None:
            h.update(f"{name} none".encode())
            continue
        a = np.ascontiguousarray(value)
        h.update(f"{name} {a.dtype.str} {a.shape}".encode())
        h.update(a.tobytes())
    return h.digest()


def prompt_digest(prompt: Prompt, shot_id: int) -> bytes | None:
    """What a prompt computed from itself alone (no earlier output as its dense input, no
    pass's memory) gives depends on: its content (:func:`content_digest`) and the shot id the
    engine gets for its frame. None for a correction (it depends on the pass before it)."""
    if prompt.correction:
        return None
    return content_digest(prompt) + f"shot {shot_id}".encode()


__all__ = ["PassKey", "PromptBook", "StateKey", "content_digest", "prompt_digest"]
