"""The adapter: every DaVinci Resolve scripting call the plugin makes, and nothing else.

Names and signatures are those of Resolve's scripting README (Developer/Scripting/README.txt):
Resolve.GetVersion(), Resolve.GetProjectManager(), Resolve.GetMediaStorage(),
ProjectManager.GetCurrentProject(), Project.GetCurrentTimeline(), Project.GetMediaPool(),
Project.GetSetting(name), Timeline.GetSetting(name),
Timeline.GetCurrentVideoItem(), Timeline.GetCurrentTimecode(), Timeline.GetTrackCount(type),
Timeline.AddTrack(type), TimelineItem.GetName(), .GetStart(), .GetDuration(),
.GetLeftOffset(), .GetMediaPoolItem(), .GetTrackTypeAndIndex(), .GetProperty(),
.SetProperty(key, value),
MediaPoolItem.GetClipProperty(name), MediaStorage.AddClipMattesToMediaPool(item, [paths],
stereoEye), MediaPool.ImportMedia([paths]), MediaPool.AppendToTimeline([clipInfo]).

The tests run this module against a stand-in (tests/resolve_standin) that implements exactly
these calls; keep new calls here so the stand-in stays small.
"""

import os
import re

from vosfx_resolve.timecode import timecode_to_frame

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".dpx")
_RANGE = re.compile(r"(.*)\[(\d+)-(\d+)\](.*)")  # shot.[1001-1100].exr: Resolve's sequence name
_LAST_NUMBER = re.compile(r"(.*?)(\d+)(\D*)")


class ResolveError(Exception):
    """Something in Resolve is not as the plugin needs it (no timeline, no clip, ...)."""


class ClipContext:
    """The timeline clip to matte and where it sits.

    ``path``: what vosfx reads (its media file; an image sequence's printf pattern:
    :func:`media_input`); ``clip_fps``: an image sequence's frame rate (None for movies, whose
    files carry theirs). ``source_in``: first used source frame (0-based, = left offset);
    ``duration``: used frames; ``source_frames``: frames in the whole file; ``record_start``:
    timeline frame of its first frame; ``track``: its video track index (1-based);
    ``playhead_source``: the source frame under the playhead (None when off the clip);
    ``end_exclusive``: whether this Resolve reads AppendToTimeline's ``endFrame`` as exclusive.
    """

    def __init__(self, **kw):
        self.__dict__.update(kw)

    @property
    def source_out(self):
        """One past the last used source frame."""
        return self.source_in + self.duration


def media_input(path, frames):
    """What vosfx reads for a media pool clip: its file; for an image sequence, the printf
    pattern of its images (``shot.%04d.exr``). Resolve names a sequence with its range in
    brackets (``shot.[1001-1100].exr``); a path to one of its images (a clip of more than one
    frame) is read the same way, so vosfx sees every frame of the clip either way."""
    folder, name = os.path.split(path)
    ranged = _RANGE.fullmatch(name)
    if ranged:
        prefix, first, last, suffix = ranged.groups()
    else:
        numbered = _LAST_NUMBER.fullmatch(name)
        is_image = os.path.splitext(name)[1].lower() in IMAGE_EXTS
        if not (numbered and is_image and (frames or 0) > 1):
            return path
        prefix, first, suffix = numbered.groups()
        last = first
    width = len(first)  # zero-padded names (0001, or as wide as the last: 1001-1100)
    padded = width > 1 and (first.startswith("0") or width == len(last))
    return os.path.join(folder, prefix + (f"%0{width}d" if padded else "%d") + suffix)


def _frame_rate(text):
    """(fps, drop frame) from a ``timelineFrameRate`` setting: "24", "23.976", "29.97 DF"."""
    words = str(text or "").split()
    try:
        fps = float(words[0])
    except (IndexError, ValueError):
        raise ResolveError(f"Resolve reported the timeline frame rate as {text!r}") from None
    return fps, "DF" in (w.upper() for w in words[1:])


def _clip_fps(mpi):
    """A media pool clip's frame rate (its ``FPS`` attribute), or None when unreadable."""
    try:
        return float(str(mpi.GetClipProperty("FPS")).split()[0])
    except (IndexError, TypeError, ValueError):
        return None


def _timeline_rate(project, timeline):
    """The timeline's own frame rate and drop-frame flag: a timeline with custom settings can
    differ from the project's, so its own setting wins; the project's is the fallback."""
    fps_text = timeline.GetSetting("timelineFrameRate") or project.GetSetting("timelineFrameRate")
    fps, drop = _frame_rate(fps_text or 24)
    flag = timeline.GetSetting("timelineDropFrameTimecode") or project.GetSetting(
        "timelineDropFrameTimecode"
    )
    return fps, drop or str(flag or "0") in ("1", "True", "true")


def _end_frame_exclusive(resolve):
    """AppendToTimeline's clipInfo ``endFrame``: inclusive up to Resolve 18, exclusive from 19
    (measured by users; a one-frame short clip otherwise). Unknown version: the current rule."""
    try:
        return int(resolve.GetVersion()[0]) >= 19
    except (AttributeError, IndexError, TypeError, ValueError):
        return True


def _project(resolve):
    if resolve is None:
        raise ResolveError("run this from DaVinci Resolve: Workspace > Scripts > vosfx Matte")
    project = resolve.GetProjectManager().GetCurrentProject()
    if not project:
        raise ResolveError("no project is open")
    return project


def current_clip(resolve):
    """The video clip under the playhead on the current timeline, as a :class:`ClipContext`."""
    project = _project(resolve)
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise ResolveError("no timeline is open")
    item = timeline.GetCurrentVideoItem()
    if not item:
        raise ResolveError("no video clip under the playhead: move the playhead onto a clip")
    mpi = item.GetMediaPoolItem()
    if not mpi:
        raise ResolveError(
            f"the clip {item.GetName()!r} has no media pool item (a generator or title?)"
        )
    path = mpi.GetClipProperty("File Path")
    if not path:
        raise ResolveError(f"the clip {item.GetName()!r} has no media file")
    frames = mpi.GetClipProperty("Frames")
    source = media_input(path, int(frames) if frames else None)
    fps, drop = _timeline_rate(project, timeline)
    start, duration = int(item.GetStart()), int(item.GetDuration())
    source_in = int(item.GetLeftOffset())
    playhead = timecode_to_frame(timeline.GetCurrentTimecode(), fps, drop)
    track = item.GetTrackTypeAndIndex()
    return ClipContext(
        timeline=timeline,
        item=item,
        media_pool_item=mpi,
        media_pool=project.GetMediaPool(),
        name=item.GetName(),
        path=source,
        # an image sequence's own rate (its clip attribute), for the files vosfx writes
        clip_fps=_clip_fps(mpi) if source != path else None,
        fps=fps,
        record_start=start,
        duration=duration,
        source_in=source_in,
        source_frames=int(frames) if frames else None,
        track=int(track[1]) if track else 1,
        end_exclusive=_end_frame_exclusive(resolve),
        playhead_source=source_in + playhead - start
        if start <= playhead < start + duration
        else None,
    )


def attach_matte(resolve, ctx, paths):
    """Attach matte files to the clip's media pool item (Color page: external matte)."""
    return bool(
        resolve.GetMediaStorage().AddClipMattesToMediaPool(ctx.media_pool_item, list(paths))
    )


# The Inspector's framing of a timeline clip (TimelineItem properties of the scripting README):
# the alpha clip placed above takes the clip's, so that its cut-out lands on the picture when
# the clip is zoomed, moved, rotated, flipped or cropped. Static values: keyframes are not
# readable through the API.
FRAMING = (
    "Pan",
    "Tilt",
    "ZoomX",
    "ZoomY",
    "ZoomGang",
    "RotationAngle",
    "AnchorPointX",
    "AnchorPointY",
    "Pitch",
    "Yaw",
    "FlipX",
    "FlipY",
    "CropLeft",
    "CropRight",
    "CropTop",
    "CropBottom",
    "CropSoftness",
    "CropRetain",
    "Distortion",
    "Scaling",
    "ResizeFilter",
)


def copy_framing(source, placed):
    """Give ``placed`` the Inspector framing of ``source`` (:data:`FRAMING`); returns the
    keys Resolve refused (none on the versions that document them), or None when this
    Resolve reports no properties (then nothing is copied)."""
    try:
        props = source.GetProperty()
    except (AttributeError, TypeError):
        props = None
    if not isinstance(props, dict):
        return None
    refused = []
    for key in FRAMING:
        if key in props and not placed.SetProperty(key, props[key]):
            refused.append(key)
    return refused


def place_above(ctx, path, first_frame):
    """Import ``path`` (an alpha clip whose frame 0 is source frame ``first_frame``) and put
    the part that matches the timeline clip on the track above it, at the same record frame,
    framed as the clip is (:func:`copy_framing`). Returns (the new timeline item, the framing
    keys Resolve refused or None: see :func:`copy_framing`)."""
    imported = ctx.media_pool.ImportMedia([path])
    if not imported:
        raise ResolveError(f"Resolve could not import {path}")
    target = ctx.track + 1
    while ctx.timeline.GetTrackCount("video") < target:
        if not ctx.timeline.AddTrack("video"):
            raise ResolveError(f"could not add video track {target}")
    first = ctx.source_in - first_frame
    placed = ctx.media_pool.AppendToTimeline(
        [
            {
                "mediaPoolItem": imported[0],
                "startFrame": first,
                # Resolve 19 on: one past the last frame; up to 18: the last frame
                "endFrame": first + ctx.duration - (0 if ctx.end_exclusive else 1),
                "trackIndex": target,
                "recordFrame": ctx.record_start,
            }
        ]
    )
    if not placed:
        raise ResolveError(f"Resolve could not place {path} on video track {target}")
    return placed[0], copy_framing(ctx.item, placed[0])
