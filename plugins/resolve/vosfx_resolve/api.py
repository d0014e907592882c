"""The adapter: every DaVinci Resolve scripting call the plugin makes, and nothing else.

Names and signatures are those of Resolve's scripting README (Developer/Scripting/README.txt):
Resolve.GetVersion(), Resolve.GetProjectManager(), Resolve.GetMediaStorage(),
ProjectManager.GetCurrentProject(), Project.GetCurrentTimeline(), Project.GetMediaPool(),
Project.GetSetting(name), Timeline.GetSetting(name),
Timeline.GetCurrentVideoItem(), Timeline.GetCurrentTimecode(), Timeline.GetTrackCount(type),
Timeline.GetItemListInTrack(type, index), Timeline.AddTrack(type),
Timeline.DeleteClips([items], ripple), TimelineItem.GetName(), .GetStart(), .GetDuration(),
.GetLeftOffset(), .GetSourceStartFrame(), .GetSourceEndFrame() (Resolve 18.5 on; read only
where this Resolve answers them), .GetMediaPoolItem(), .GetTrackTypeAndIndex(),
.GetProperty(), .SetProperty(key, value),
MediaPoolItem.GetClipProperty(name), MediaStorage.AddClipMattesToMediaPool(item, [paths],
stereoEye), MediaPool.ImportMedia([paths]), MediaPool.AppendToTimeline([clipInfo]),
MediaPool.GetClipMatteList(item), MediaPool.DeleteClipMattes(item, [paths]).

The tests run this module against a stand-in (tests/resolve_standin) that implements exactly
these calls; keep new calls here so the stand-in stays small.
"""

import bisect
import os
import re

from vosfx_resolve.timecode import timecode_to_frame

IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".exr", ".dpx")
_RANGE = re.compile(r"(.*)\[(\d+)-(\d+)\](.*)")  # shot.[1001-1100].exr: Resolve's sequence name
_LAST_NUMBER = re.compile(r"(.*?)(\d+)(\D*)")
_PRINTF = re.compile(r"%(0\d+)?d")  # the frame number of a sequence pattern: %04d, %d
# what this plugin writes (app.plan_job): <stem>_vosfx_<first>-<last>.mov and its luma matte
_OUTPUT = re.compile(r".*_vosfx_\d+-\d+(\.prores422hq-matte)?\.mov", re.IGNORECASE)


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
        self.numbers = None  # an image sequence's frame numbers present on disk, sorted
        self.first_number = None  # the number Resolve's position 0 shows
        self.source_span = None  # (GetSourceStartFrame, GetSourceEndFrame) where answered
        self.clip_rate = None  # the media pool clip's FPS attribute
        self.__dict__.update(kw)

    @property
    def source_out(self):
        """One past the last used source frame."""
        return self.source_in + self.duration

    def missing(self, first, end):
        """Frame numbers of Resolve's source positions [first, end) with no image on disk
        (an image sequence with a gap: Resolve counts a missing number as a frame, vosfx reads
        the images present); [] for a movie."""
        if self.numbers is None:
            return []
        present = set(self.numbers)
        wanted = range(self.first_number + first, self.first_number + end)
        return [n for n in wanted if n not in present]

    def to_vosfx(self, position):
        """vosfx's frame index (a position among the files present) of Resolve's source
        position ``position`` (counted in frame numbers, gaps included); None when that
        number has no image. A movie's are the same."""
        if self.numbers is None:
            return position
        number = self.first_number + position
        i = bisect.bisect_left(self.numbers, number)
        return i if i < len(self.numbers) and self.numbers[i] == number else None


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


def is_vosfx_output(path):
    """Whether ``path`` is a file this plugin wrote (the alpha clip it placed above a clip,
    or its luma matte): never a source to matte."""
    return bool(path) and bool(_OUTPUT.fullmatch(os.path.basename(str(path))))


def sequence_number(name):
    """The printf frame number (``%04d``, ``%d``) in a sequence pattern's name, as a match, or
    None: a movie named ``wide 100%.mov`` has none."""
    return _PRINTF.search(name)


def sequence_numbers(pattern):
    """The frame numbers of the images a sequence pattern (``/plates/shot.%04d.exr``) names
    that exist, sorted; None when ``pattern`` is no pattern or its folder cannot be read."""
    folder, name = os.path.split(pattern)
    found = _PRINTF.search(name)
    if not found:
        return None
    width = int(found.group(1) or 1)
    number = rf"\d{{{width}}}|[1-9]\d{{{width},}}" if found.group(1) else r"\d+"
    same = re.compile(
        re.escape(name[: found.start()]) + f"({number})" + re.escape(name[found.end() :])
    )
    try:
        names = os.listdir(folder or ".")
    except OSError:
        return None
    return sorted(int(m.group(1)) for m in map(same.fullmatch, names) if m)


def _source_item(timeline, playhead):
    """(item, media pool item) of the clip to matte under the playhead: Resolve's current
    video item (the topmost), else the topmost clip below it that is a source: a title,
    generator or adjustment clip (no media pool item) and this plugin's own alpha clip placed
    on an earlier run are passed over."""
    top = timeline.GetCurrentVideoItem()
    if not top:
        raise ResolveError("no video clip under the playhead: move the playhead onto a clip")
    passed = []
    candidates = [top]
    track = top.GetTrackTypeAndIndex()
    for index in range(int(track[1]) - 1 if track else 0, 0, -1):
        candidates += [
            item
            for item in timeline.GetItemListInTrack("video", index) or []
            if item.GetStart() <= playhead < item.GetStart() + item.GetDuration()
        ]
    for item in candidates:
        mpi = item.GetMediaPoolItem()
        if not mpi:
            passed.append(f"{item.GetName()!r} (a title, generator or adjustment clip)")
        elif is_vosfx_output(mpi.GetClipProperty("File Path")):
            passed.append(f"{item.GetName()!r} (a vosfx matte)")
        else:
            return item, mpi
    raise ResolveError(
        "no source clip under the playhead, only " + ", ".join(passed) + ": move the playhead "
        "onto a clip of media"
    )


def _source_span(item):
    """(GetSourceStartFrame(), GetSourceEndFrame()) of a timeline item, or None where this
    Resolve does not answer them (before 18.5)."""
    try:
        span = (item.GetSourceStartFrame(), item.GetSourceEndFrame())
    except (AttributeError, TypeError):
        return None
    try:
        return tuple(int(v) for v in span)
    except (TypeError, ValueError):
        return None


def current_clip(resolve):
    """The video clip to matte under the playhead on the current timeline (:func:`_source_item`),
    as a :class:`ClipContext`."""
    project = _project(resolve)
    timeline = project.GetCurrentTimeline()
    if not timeline:
        raise ResolveError("no timeline is open")
    fps, drop = _timeline_rate(project, timeline)
    playhead = timecode_to_frame(timeline.GetCurrentTimecode(), fps, drop)
    item, mpi = _source_item(timeline, playhead)
    path = mpi.GetClipProperty("File Path")
    if not path:
        raise ResolveError(f"the clip {item.GetName()!r} has no media file")
    frames = mpi.GetClipProperty("Frames")
    source = media_input(path, int(frames) if frames else None)
    numbers = first_number = None
    if source != path:  # an image sequence: Resolve counts its numbers, vosfx its files
        numbers = sequence_numbers(source)
        ranged = _RANGE.fullmatch(os.path.basename(path))
        named = _LAST_NUMBER.fullmatch(os.path.basename(path))
        if ranged:
            first_number = int(ranged.group(2))
        elif named:
            first_number = int(named.group(2))
        if not numbers or first_number is None:
            numbers = first_number = None  # offline: vosfx says so when it reads
    start, duration = int(item.GetStart()), int(item.GetDuration())
    source_in = int(item.GetLeftOffset())
    track = item.GetTrackTypeAndIndex()
    return ClipContext(
        timeline=timeline,
        item=item,
        media_pool_item=mpi,
        media_pool=project.GetMediaPool(),
        name=item.GetName(),
        path=source,
        is_sequence=source != path,
        # an image sequence's own rate (its clip attribute), for the files vosfx writes
        clip_fps=_clip_fps(mpi) if source != path else None,
        clip_rate=_clip_fps(mpi),
        source_span=_source_span(item),
        numbers=numbers,
        first_number=first_number,
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


def check_one_to_one(ctx):
    """ResolveError unless the clip shows one source frame per timeline frame: the alpha clip
    is placed at 100 % speed and the matte has the source's frames, so a retimed clip (speed
    change, fit to fill, a speed ramp) or a clip whose frame rate differs from the
    timeline's (Resolve conforms it, skipping or repeating frames) would slide off it."""
    if ctx.clip_rate and abs(ctx.clip_rate - ctx.fps) > 1e-3 * ctx.fps:
        raise ResolveError(
            f"the clip {ctx.name!r} runs at {ctx.clip_rate:g} fps and the timeline at "
            f"{ctx.fps:g} fps: Resolve does not show one source frame per timeline frame, so "
            "the matte would not line up; set the clip's frame rate (Clip Attributes) to the "
            "timeline's, or matte it on a timeline at its rate"
        )
    if ctx.source_span is not None:
        first, last = ctx.source_span
        # inclusive or exclusive end, whichever this Resolve reports; reversed: last < first
        if last - first not in (ctx.duration, ctx.duration - 1):
            raise ResolveError(
                f"the clip {ctx.name!r} is retimed: its {ctx.duration} timeline frames show "
                f"source frames {first}-{last}; vosfx mattes one source frame per timeline "
                "frame: reset its speed to 100 % (Change Clip Speed) first"
            )


def attach_matte(resolve, ctx, paths):
    """Attach matte files to the clip's media pool item (Color page: external matte), in
    place of the mattes this plugin attached before (a re-run replaces its own)."""
    media_pool = ctx.media_pool
    old = [p for p in media_pool.GetClipMatteList(ctx.media_pool_item) or [] if is_vosfx_output(p)]
    if old:
        media_pool.DeleteClipMattes(ctx.media_pool_item, old)
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


def _remove_placed(ctx, target):
    """Delete from video track ``target`` the alpha clips this plugin placed over the clip's
    record frames before, so that a re-run replaces its own instead of stacking another."""
    if ctx.timeline.GetTrackCount("video") < target:
        return
    end = ctx.record_start + ctx.duration
    old = []
    for item in ctx.timeline.GetItemListInTrack("video", target) or []:
        mpi = item.GetMediaPoolItem()
        overlaps = item.GetStart() < end and item.GetStart() + item.GetDuration() > ctx.record_start
        if overlaps and mpi and is_vosfx_output(mpi.GetClipProperty("File Path")):
            old.append(item)
    if old and not ctx.timeline.DeleteClips(old, False):
        raise ResolveError(f"Resolve did not remove the earlier alpha clip on track {target}")


def place_above(ctx, path, first_frame):
    """Import ``path`` (an alpha clip whose frame 0 is source position ``first_frame``) and put
    the part that matches the timeline clip on the track above it, at the same record frame,
    framed as the clip is (:func:`copy_framing`), in place of an alpha clip placed there
    before (:func:`_remove_placed`). Returns (the new timeline item, the framing keys Resolve
    refused or None: see :func:`copy_framing`)."""
    imported = ctx.media_pool.ImportMedia([path])
    if not imported:
        raise ResolveError(f"Resolve could not import {path}")
    target = ctx.track + 1
    _remove_placed(ctx, target)
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
