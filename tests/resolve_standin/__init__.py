"""A stand-in for DaVinci Resolve's scripting objects (tests only).

It implements exactly the documented calls plugins/resolve/vosfx_resolve/api.py makes, with
the names and arguments of Resolve's scripting README, and records every call in ``log`` as
``(object, method, args)``. Anything else raises AttributeError, so a plugin that starts using
an undocumented or unlisted call fails here first. Files are checked where Resolve would read
them (ImportMedia, AddClipMattesToMediaPool).
"""

from __future__ import annotations

import os

TRACK_TYPES = ("video", "audio", "subtitle")
CLIP_INFO_KEYS = {
    "mediaPoolItem",
    "startFrame",
    "endFrame",
    "mediaType",
    "trackIndex",
    "recordFrame",
}


class _Recorded:
    def __init__(self, log: list):
        self._log = log

    def _call(self, method: str, *args):
        self._log.append((type(self).__name__, method, args))


class MediaPoolItem(_Recorded):
    def __init__(self, log, path: str, frames: int, fps: float = 24.0):
        super().__init__(log)
        self.path, self.frames, self.fps = path, frames, fps
        self.mattes: list[str] = []

    def GetName(self):
        return os.path.basename(self.path)

    def GetClipProperty(self, propertyName=None):
        self._call("GetClipProperty", propertyName)
        props = {"File Path": self.path, "Frames": str(self.frames), "FPS": self.fps}
        return props if propertyName is None else props.get(propertyName, "")


# TimelineItem.GetProperty/SetProperty keys of the scripting README ("Looking up Timeline
# item properties") and their defaults, the Inspector's values of a clip just placed
ITEM_PROPERTIES = {
    "Pan": 0.0,
    "Tilt": 0.0,
    "ZoomX": 1.0,
    "ZoomY": 1.0,
    "ZoomGang": True,
    "RotationAngle": 0.0,
    "AnchorPointX": 0.0,
    "AnchorPointY": 0.0,
    "Pitch": 0.0,
    "Yaw": 0.0,
    "FlipX": False,
    "FlipY": False,
    "CropLeft": 0.0,
    "CropRight": 0.0,
    "CropTop": 0.0,
    "CropBottom": 0.0,
    "CropSoftness": 0.0,
    "CropRetain": False,
    "DynamicZoomEase": 0,
    "CompositeMode": 0,
    "Opacity": 100.0,
    "Distortion": 0.0,
    "RetimeProcess": 0,
    "MotionEstimation": 0,
    "Scaling": 0,
    "ResizeFilter": 0,
}


class TimelineItem(_Recorded):
    def __init__(self, log, mpi, start: int, duration: int, left_offset: int, track: int):
        super().__init__(log)
        self.mpi, self.start, self.duration = mpi, start, duration
        self.left_offset, self.track = left_offset, track
        self.properties = dict(ITEM_PROPERTIES)

    def GetProperty(self, propertyKey=None):
        self._call("GetProperty", propertyKey)
        if propertyKey is None:
            return dict(self.properties)
        return self.properties.get(propertyKey)

    def SetProperty(self, propertyKey, propertyValue):
        self._call("SetProperty", propertyKey, propertyValue)
        if propertyKey not in self.properties:
            return False
        self.properties[propertyKey] = propertyValue
        return True

    def GetName(self):
        return self.mpi.GetName() if self.mpi else "Title"

    def GetStart(self):
        self._call("GetStart")
        return self.start

    def GetDuration(self):
        self._call("GetDuration")
        return self.duration

    def GetLeftOffset(self):
        self._call("GetLeftOffset")
        return self.left_offset

    def GetMediaPoolItem(self):
        self._call("GetMediaPoolItem")
        return self.mpi

    def GetTrackTypeAndIndex(self):
        self._call("GetTrackTypeAndIndex")
        return ["video", self.track]


class Timeline(_Recorded):
    """``fps``: its own frame rate (a timeline with custom settings may differ from the
    project's); ``drop``: drop-frame timecode (29.97/59.94)."""

    def __init__(self, log, fps: float, tracks: int = 1, drop: bool = False):
        super().__init__(log)
        self.fps, self.tracks, self.drop = fps, tracks, drop
        self.items: list[TimelineItem] = []
        self.playhead = 0  # timeline frame

    def GetSetting(self, settingName=None):
        self._call("GetSetting", settingName)
        settings = {
            "timelineFrameRate": f"{self.fps:g}",
            "timelineDropFrameTimecode": "1" if self.drop else "0",
        }
        return settings if settingName is None else settings.get(settingName, "")

    def GetCurrentVideoItem(self):
        self._call("GetCurrentVideoItem")
        under = [i for i in self.items if i.start <= self.playhead < i.start + i.duration]
        return max(under, key=lambda i: i.track) if under else None

    def GetCurrentTimecode(self):
        self._call("GetCurrentTimecode")
        n = round(self.fps)
        f = self.playhead
        if self.drop:  # labels 0-1 (0-3 at 59.94) skipped each minute but every tenth
            d = 2 * n // 30
            per_10min, per_min = 600 * n - 9 * d, 60 * n - d
            tens, rest = divmod(f, per_10min)
            f += 9 * d * tens + (d * ((rest - d) // per_min) if rest >= d else 0)
        sep = ";" if self.drop else ":"
        hh, mm, ss = f // (3600 * n), f // (60 * n) % 60, f // n % 60
        return f"{hh:02d}:{mm:02d}:{ss:02d}{sep}{f % n:02d}"

    def GetTrackCount(self, trackType):
        self._call("GetTrackCount", trackType)
        if trackType not in TRACK_TYPES:
            raise ValueError(f"trackType must be one of {TRACK_TYPES}, got {trackType!r}")
        return self.tracks if trackType == "video" else 0

    def GetItemListInTrack(self, trackType, index):
        self._call("GetItemListInTrack", trackType, index)
        if trackType != "video":
            return []
        return sorted((i for i in self.items if i.track == index), key=lambda i: i.start)

    def DeleteClips(self, timelineItems, ripple=False):
        self._call("DeleteClips", list(timelineItems), ripple)
        if not all(i in self.items for i in timelineItems):
            return False
        self.items[:] = [i for i in self.items if i not in timelineItems]
        return True

    def AddTrack(self, trackType, optionalSubTrackType=None):
        self._call("AddTrack", trackType)
        if trackType != "video":
            return False
        self.tracks += 1
        return True


class MediaPool(_Recorded):
    def __init__(self, log, timeline: Timeline, frames_of, version=(19, 1, 4, 11, "")):
        super().__init__(log)
        self.timeline, self.frames_of, self.version = timeline, frames_of, version
        self.clips: list[MediaPoolItem] = []

    def GetClipMatteList(self, MediaPoolItem_):
        self._call("GetClipMatteList", MediaPoolItem_)
        return list(MediaPoolItem_.mattes)

    def DeleteClipMattes(self, MediaPoolItem_, paths):
        self._call("DeleteClipMattes", MediaPoolItem_, list(paths))
        MediaPoolItem_.mattes[:] = [p for p in MediaPoolItem_.mattes if p not in paths]
        return True

    def ImportMedia(self, items):
        self._call("ImportMedia", list(items))
        if not all(isinstance(p, str) and os.path.isfile(p) for p in items):
            return []
        new = [MediaPoolItem(self._log, p, self.frames_of(p)) for p in items]
        self.clips.extend(new)
        return new

    def AppendToTimeline(self, clipInfos):
        """``endFrame`` is inclusive up to Resolve 18 and exclusive from 19 (measured by
        users: github.com/nakano000/Resolve_Script/pull/23, samuelgursky/davinci-resolve-mcp
        issue 82), so the stand-in places what the ``version`` it plays would place."""
        self._call("AppendToTimeline", [dict(c) for c in clipInfos])
        placed = []
        for info in clipInfos:
            unknown = set(info) - CLIP_INFO_KEYS
            mpi = info.get("mediaPoolItem")
            if unknown or not isinstance(mpi, MediaPoolItem):
                return []
            exclusive = self.version[0] >= 19
            first = info.get("startFrame", 0)
            last = info.get("endFrame", mpi.frames if exclusive else mpi.frames - 1) - exclusive
            if (
                not 0 <= first <= last < mpi.frames
                or info.get("trackIndex", 1) > self.timeline.tracks
            ):
                return []
            item = TimelineItem(
                self._log,
                mpi,
                info["recordFrame"],
                last - first + 1,
                first,
                info.get("trackIndex", 1),
            )
            self.timeline.items.append(item)
            placed.append(item)
        return placed


class MediaStorage(_Recorded):
    def AddClipMattesToMediaPool(self, MediaPoolItem_, paths, stereoEye=None):
        self._call("AddClipMattesToMediaPool", MediaPoolItem_, list(paths))
        if stereoEye not in (None, "left", "right"):
            return False
        if not paths or not all(os.path.isfile(p) for p in paths):
            return False
        MediaPoolItem_.mattes.extend(paths)
        return True


class Project(_Recorded):
    def __init__(self, log, timeline, media_pool, fps):
        super().__init__(log)
        self.timeline, self.media_pool, self.fps = timeline, media_pool, fps

    def GetCurrentTimeline(self):
        self._call("GetCurrentTimeline")
        return self.timeline

    def GetMediaPool(self):
        self._call("GetMediaPool")
        return self.media_pool

    def GetSetting(self, settingName=None):
        self._call("GetSetting", settingName)
        settings = {"timelineFrameRate": str(self.fps), "timelineDropFrameTimecode": "0"}
        return settings if settingName is None else settings.get(settingName, "")


class ProjectManager(_Recorded):
    def __init__(self, log, project):
        super().__init__(log)
        self.project = project

    def GetCurrentProject(self):
        self._call("GetCurrentProject")
        return self.project


class Resolve(_Recorded):
    """``Resolve(fps=24)``; then ``add_clip(...)`` to lay out the timeline for a test.
    ``timeline_fps``: the timeline's own rate when it differs from the project's;
    ``version``: what ``GetVersion()`` reports ([major, minor, patch, build, suffix])."""

    def __init__(
        self,
        fps: float = 24.0,
        frames_of=lambda path: 0,
        *,
        timeline_fps: float | None = None,
        drop: bool = False,
        version=(19, 1, 4, 11, ""),
    ):
        self.log: list = []
        super().__init__(self.log)
        self.version = list(version)
        self.timeline = Timeline(self.log, timeline_fps or fps, drop=drop)
        self.media_pool = MediaPool(self.log, self.timeline, frames_of, self.version)
        self.project = Project(self.log, self.timeline, self.media_pool, fps)
        self.storage = MediaStorage(self.log)
        self.manager = ProjectManager(self.log, self.project)

    def add_clip(self, path, frames, *, record_start, duration, left_offset, track=1):
        mpi = MediaPoolItem(self.log, path, frames)
        self.media_pool.clips.append(mpi)
        item = TimelineItem(self.log, mpi, record_start, duration, left_offset, track)
        self.timeline.items.append(item)
        return item

    def calls(self, *methods):
        """The logged method names (only those in ``methods`` when given), in order."""
        return [m for _o, m, _a in self.log if not methods or m in methods]

    def GetVersion(self):
        self._call("GetVersion")
        return list(self.version)

    def GetProjectManager(self):
        self._call("GetProjectManager")
        return self.manager

    def GetMediaStorage(self):
        self._call("GetMediaStorage")
        return self.storage
