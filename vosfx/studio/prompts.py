"""The studio's prompts as the user made them: objects, one :class:`FramePrompt` per object and
frame, undo/redo, and each change computed on its frame at once.

Every prompt is kept as the job JSON spells it (:class:`FramePrompt`, one per object and
frame) and turned into the engine's Prompt by the same function ``vosfx matte --job`` uses
(:func:`vosfx.pipeline.resolve_prompts`), and each click recomputes the object's whole prompt
on that frame from its clicks (``refine=False``), with, on a frame tracking had reached, the
frame's tracked logits kept when the first click came as the prompt's prior (a file the saved
job carries): so the clicks edit the tracked mask, and the mask the page shows after a click
is what a render of the saved job computes for that frame, exactly.

:class:`PromptsMixin` is that part of :class:`~vosfx.studio.state.Studio`; the studio makes
the state it reads (the bookkeeping below and the session) in its constructor.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vosfx.errors import PromptError
from vosfx.job import Job, PromptSpec
from vosfx.types import MaskResult, Prompt, VideoInfo

if TYPE_CHECKING:
    from vosfx.session import ClipSession


@dataclass(frozen=True)
class FramePrompt:
    """One object's whole prompt on one frame, as the user made it: clicks (``points`` in
    source pixels with ``labels`` 1 include / 0 exclude) and an optional ``box``, or a
    ``mask`` image file (a dropped mask replaces the clicks). ``prior``: a correction's
    ``.npy`` of the frame's tracked logits when the first click came, which the clicks edit
    (the decoder's dense input). ``correction``: a job's correction (docs/session.md rule d:
    the clicks edit the mask tracked there from the previous prompted frame), kept as the job
    has it; the studio's own clicks make priors, not these."""

    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None
    mask: str | None = None
    prior: str | None = None
    correction: bool = False

    @property
    def empty(self) -> bool:
        return not self.points and self.box is None and self.mask is None

    def spec(self, frame: int, obj_id: int) -> PromptSpec:
        return PromptSpec(
            frame=frame,
            obj_id=obj_id,
            mask=self.mask,
            points=self.points,
            labels=self.labels,
            box=self.box,
            prior=self.prior if self.mask is None else None,
            correction=self.correction and self.mask is None,
        )


def _dropped(name: str | None) -> str:
    """The dropped file in words: its name when the browser gave one (control characters
    out, at most 120 characters)."""
    clean = "".join(c for c in (name or "") if c.isprintable()).strip()[:120]
    return f'the dropped file "{clean}"' if clean else "the dropped file"


@dataclass
class StudioObject:
    obj_id: int
    name: str


class PromptsMixin:
    """Objects, prompts and undo/redo of a :class:`~vosfx.studio.state.Studio`."""

    # made by Studio.__init__: the clip and the frames matted, the session, the folder of the
    # dropped masks and priors, and the bookkeeping (``edits``: (obj, frame) -> prompt;
    # ``_lock`` guards it)
    info: VideoInfo
    start: int
    end: int
    session: ClipSession
    masks_dir: Path
    objects: dict[int, StudioObject]
    edits: dict[tuple[int, int], FramePrompt]
    _undo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]]
    _redo: list[tuple[int, int, FramePrompt | None, FramePrompt | None]]
    _redo_cleared: list[tuple[int, int, FramePrompt | None, FramePrompt | None]]
    _lock: threading.RLock
    _objects_lock: threading.Lock
    _mask_seq: int

    if TYPE_CHECKING:

        def stop(self) -> None: ...  # cancels the running track or render (TasksMixin)

        def changed(self) -> None: ...  # Studio's: the session kept on disk (autosave)

        @property
        def unsaved(self) -> bool: ...  # Studio's: changed since the job was last saved

    # --- objects --------------------------------------------------------------------------
    def add_object(self, name: str | None = None) -> StudioObject:
        # its own lock, not the prompts' (a track or render holds that for its whole run):
        # a new object touches no prompt, so "+ Object" answers at once during one
        with self._objects_lock:
            obj_id = max(self.objects, default=0) + 1
            obj = StudioObject(obj_id, name or f"object {obj_id}")
            self.objects[obj_id] = obj
            return obj

    def rename_object(self, obj_id: int, name: str) -> None:
        name = name.strip()[:80]
        if not name:
            raise PromptError("an object's name cannot be empty")
        self._object(obj_id).name = name
        if any(k[0] == obj_id for k in list(self.edits)):  # a saved job names it
            self.changed()

    def delete_object(self, obj_id: int) -> None:
        self._object(obj_id)
        self.stop()
        with self._lock:
            if obj_id in self.session.obj_ids:
                self.session.delete_object(obj_id)
            removed = [k for k in self.edits if k[0] == obj_id]
            for key in removed:
                del self.edits[key]
            self._undo = [u for u in self._undo if u[0] != obj_id]
            self._redo = [u for u in self._redo if u[0] != obj_id]
            with self._objects_lock:
                del self.objects[obj_id]
            if removed:
                self.changed()

    def _object(self, obj_id: int) -> StudioObject:
        if obj_id not in self.objects:
            raise PromptError(f"there is no object {obj_id}; objects: {sorted(self.objects)}")
        return self.objects[obj_id]

    # --- prompts --------------------------------------------------------------------------
    def click(self, obj_id: int, frame: int, x: float, y: float, label: int) -> MaskResult:
        """Add an include (``label`` 1) or exclude (0) point for ``obj_id`` on ``frame``. On
        a frame whose prompt is a mask (dropped or painted) the clicks edit that mask: its
        output becomes their prior, as SAM 2's predictor decodes clicks after a mask."""
        old = self.edits.get((obj_id, frame)) or FramePrompt()
        base = old
        if old.mask is not None:
            base = FramePrompt(prior=self._prior_of(obj_id, frame))
        new = replace(
            base, points=(*base.points, (float(x), float(y))), labels=(*base.labels, int(label))
        )
        return self.set_prompt(obj_id, frame, new)

    def box(self, obj_id: int, frame: int, box: tuple[float, float, float, float]) -> MaskResult:
        """Set ``obj_id``'s box on ``frame`` (two corners in source pixels, either order),
        keeping its clicks; it replaces a dropped mask."""
        old = self.edits.get((obj_id, frame)) or FramePrompt()
        base = FramePrompt() if old.mask is not None else old
        x0, y0, x1, y1 = box
        new = replace(base, box=(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        return self.set_prompt(obj_id, frame, new)

    def drop_mask(
        self, obj_id: int, frame: int, data: bytes, name: str | None = None
    ) -> MaskResult:
        """A mask image dropped on the viewer, read as ``vosfx matte --mask FILE --fit`` reads
        it (:func:`~vosfx.io.prompts.image_labels`: palette indices, alpha unless opaque, any
        channel >= 128, 16-bit levels; every object in it is ``obj_id``; scaled to the clip's
        size, nearest neighbour): saved as a PNG among the studio's files and made the
        object's prompt. ``name``: the dropped file's name, as the browser gave it (only said
        in errors)."""
        import io

        from PIL import Image, UnidentifiedImageError

        from vosfx.io.prompts import image_labels, resize_nearest

        self._object(obj_id)  # before a file is made for it
        what = _dropped(name)
        expected = (
            "drop a mask image of the object (PNG, TIFF, JPEG or another image format: "
            "white or a palette index on the object, or its alpha)"
        )
        try:
            opened = Image.open(io.BytesIO(data))
            opened.load()
        except UnidentifiedImageError:
            raise PromptError(f"{what} is not an image; {expected}") from None
        except Image.DecompressionBombError:
            raise PromptError(f"{what} has too many pixels to be read as a mask") from None
        except OSError:  # truncated or damaged (PIL's message names its in-memory stream)
            raise PromptError(
                f"{what} is a damaged or cut-short image that could not be read; {expected}"
            ) from None
        labels = image_labels(opened, name=what.replace("file", "image", 1))
        if labels.shape != (self.info.height, self.info.width):
            labels = resize_nearest(labels, self.info.width, self.info.height)
        mask = (labels > 0).astype(np.uint8) * 255
        if not mask.any():
            raise PromptError(
                "the dropped mask is empty (no palette index > 0, no alpha or channel >= 128)"
            )
        self._mask_seq += 1
        path = self.masks_dir / f"mask_obj{obj_id}_f{frame}_{self._mask_seq}.png"
        Image.fromarray(mask, "L").save(path)
        return self.set_prompt(obj_id, frame, FramePrompt(mask=str(path)))

    def set_prompt(
        self,
        obj_id: int,
        frame: int,
        new: FramePrompt | None,
        *,
        record: bool = True,
        opening: bool = False,
    ) -> MaskResult:
        """Make ``new`` the object's whole prompt on ``frame`` (None or empty: remove it) and
        compute that frame at once; ``opening`` (a saved job's prompts): a correction is
        computed by the next Track, from the pass before it, instead of replaying that pass
        now. Cancels tracking first (the pass would be stale)."""
        self._object(obj_id)
        if not self.start <= frame < self.end:
            raise PromptError(
                f"frame {frame} is outside the frames being matted ({self.start}..{self.end - 1})"
            )
        self.stop()
        with self._lock:
            old = self.edits.get((obj_id, frame))
            if new is not None and new.empty:
                new = None
            if new is None:
                if old is not None:
                    self.session.remove_prompt(obj_id, frame)
                    del self.edits[(obj_id, frame)]
            else:
                first = old is None and record and new.mask is None
                if first and new.prior is None and not new.correction:
                    new = replace(new, prior=self._tracked_prior(obj_id, frame))
                prompt = self._resolve(obj_id, frame, new)
                if opening and prompt.correction:
                    self.session.set_prompts([prompt])
                else:
                    self.session.add_prompt(prompt, refine=False)
                self.edits[(obj_id, frame)] = new
            if record and new != old:  # (clearing a frame without a prompt is no step)
                self._undo.append((obj_id, frame, old, new))
                # kept until the next step, for retract_click to put back
                self._redo_cleared, self._redo = self._redo, []
            if new != old and not opening:
                self.changed()
            return self.session.result(frame)

    def _prior_of(self, obj_id: int, frame: int) -> str | None:
        """The frame's output for the object (its mask prompt's) saved as a prior, or None."""
        res = self.session.store.get(obj_id, frame)
        if res is None:
            return None
        self._mask_seq += 1
        path = self.masks_dir / f"prior_obj{obj_id}_f{frame}_{self._mask_seq}.npy"
        np.save(path, np.asarray(res.logits, np.float32), allow_pickle=False)
        return str(path)

    def _tracked_prior(self, obj_id: int, frame: int) -> str | None:
        """A first click on a frame tracking reached: the frame's tracked logits for the
        object, saved as the correction's prior (``.npy`` among the studio's files), so the
        clicks edit the tracked mask; None on a frame without a tracked output for it."""
        if self.session.store.is_prompted(obj_id, frame):
            return None
        return self._prior_of(obj_id, frame)

    def _resolve(self, obj_id: int, frame: int, fp: FramePrompt) -> Prompt:
        """``fp`` as the engine's Prompt, by the function ``vosfx matte --job`` uses."""
        from vosfx.pipeline import resolve_prompts

        (prompt,) = resolve_prompts(
            (fp.spec(frame, obj_id),),
            self.info,
            fit=False,
            objects=None,
            start=self.start,
            end=self.end,
        )
        return prompt

    def restore(self, job: Job) -> None:
        """Reopen a saved job's prompts (ids as ``vosfx matte`` gives them: a mask without an
        id holds its palette's objects, clicks without one go after the masks' ids) and the
        names it gives its objects."""
        from PIL import Image

        from vosfx.pipeline import resolve_prompts

        mask_ids: set[int] = set()
        for spec in job.prompts:
            if spec.mask is not None:
                found = resolve_prompts(
                    (spec,),
                    self.info,
                    fit=job.fit,
                    objects=job.objects,
                    start=self.start,
                    end=self.end,
                )
                for p in found:
                    if p.mask is None:
                        continue
                    path = self.masks_dir / f"mask_obj{p.obj_id}_f{p.frame_index}.png"
                    Image.fromarray(p.mask.astype(np.uint8) * 255, "L").save(path)
                    fp = FramePrompt(mask=str(path))
                    self._restore_one(p.obj_id, p.frame_index, fp, job.names.get(p.obj_id))
                    mask_ids.add(p.obj_id)
                continue
            obj = spec.obj_id if spec.obj_id is not None else max(mask_ids, default=0) + 1
            if job.objects is not None and obj not in job.objects:
                continue
            self._restore_one(
                obj,
                spec.frame,
                FramePrompt(
                    spec.points,
                    spec.labels,
                    spec.box,
                    prior=self._own(spec.prior),
                    correction=spec.correction,
                ),
                job.names.get(obj),
            )

    def _own(self, prior: str | None) -> str | None:
        """A reopened job's prior, copied among the studio's own files (the session kept on
        disk names it there, and the job it came from may go)."""
        if prior is None:
            return None
        import shutil

        target = self.masks_dir / Path(prior).name
        if Path(prior).resolve() != target.resolve():
            shutil.copyfile(prior, target)
        return str(target)

    def _restore_one(self, obj_id: int, frame: int, fp: FramePrompt, name: str | None) -> None:
        if obj_id not in self.objects:
            self.objects[obj_id] = StudioObject(obj_id, f"object {obj_id}")
        if name:
            self.objects[obj_id].name = name
        self.set_prompt(obj_id, frame, fp, record=False, opening=True)

    def undo(self) -> int | None:
        """Undo the last prompt change; returns its frame (None: nothing to undo)."""
        return self._replay(self._undo, self._redo, back=True)

    def redo(self) -> int | None:
        """Redo the last undone prompt change; returns its frame (None: nothing to redo)."""
        return self._replay(self._redo, self._undo, back=False)

    def retract_click(
        self, obj_id: int, frame: int, point: tuple[float, float], label: int
    ) -> int | None:
        """Take back the last change if it is the click at ``point`` (source pixels) with
        ``label`` on ``obj_id``'s prompt on ``frame``: the first press of a double-click,
        which fits the view (the page sends a click at once, not after the double-click time,
        ~0.5 s, that would tell the two apart). As undo, but it leaves no redo step and the
        redo steps the click cleared are back: as if the click never came. Returns the frame;
        None (nothing done) when the last change is anything else."""
        if not self._undo:
            return None
        obj, f, old, new = self._undo[-1]
        if (
            (obj, f) != (obj_id, frame)
            or new is None
            or not new.points
            or new.points[-1] != tuple(point)
            or new.labels[-1] != label
            or (old is not None and old.mask is None and old.points != new.points[:-1])
        ):
            return None
        self._undo.pop()
        self.set_prompt(obj_id, frame, old, record=False)
        self._redo, self._redo_cleared = self._redo_cleared, []
        return frame

    def _replay(self, src: list, dst: list, *, back: bool) -> int | None:
        """Move the last change of ``src`` to ``dst``, setting its prompt from before it
        (``back``) or after it; returns its frame (None: ``src`` is empty)."""
        if not src:
            return None
        self._redo_cleared = []  # (retract_click takes back only the last step, unreplayed)
        obj_id, frame, old, new = src.pop()
        self.set_prompt(obj_id, frame, old if back else new, record=False)
        dst.append((obj_id, frame, old, new))
        return frame

    # --- what the page reads --------------------------------------------------------------
    def prompt_state(self) -> dict:
        """The prompts as the page lists them (a ``mask`` flag instead of the file), whether
        undo and redo can run, and whether they changed since the job was last saved. (No
        lock: a track holds it for its whole run.)"""
        return {
            "prompts": [
                dict(fp.spec(f, o).to_dict(), mask=fp.mask is not None)
                for (o, f), fp in sorted(dict(self.edits).items())
            ],
            "can_undo": bool(self._undo),
            "can_redo": bool(self._redo),
            "unsaved": self.unsaved,
        }
