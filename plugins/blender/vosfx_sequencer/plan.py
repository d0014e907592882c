"""The job for a movie strip and how its matte comes back (bpy calls, no UI)."""

import itertools
import os
import re
import tempfile
from typing import TYPE_CHECKING

import bpy

if TYPE_CHECKING:  # `vosfx plugins install blender` copies plugins/common's client in here
    from plugins.common import vosfx_client
else:
    from . import vosfx_client

MATTE_FORMAT = "png16-matte"  # 16-bit grey PNG sequence, named by source frame
MODIFIER_NAME = "vosfx matte"
STRIP_TYPES = ("MOVIE", "IMAGE")  # what the add-on mattes: movies and image sequences
_NUMBERED = re.compile(r"(.*?)(\d+)(\D*)")  # prefix, the last run of digits, suffix


def strips(ed):
    """The sequencer's top-level strips: ``strips`` in Blender 5.0, ``sequences`` in 4.2 LTS
    (the add-on's oldest; both run in the tests), whichever this Blender has."""
    return ed.strips if hasattr(ed, "strips") else ed.sequences


def strips_all(ed):
    """Every strip, those inside meta strips included (``sequences_all`` in 4.2)."""
    return ed.strips_all if hasattr(ed, "strips_all") else ed.sequences_all


def sequencer_scene(context):
    """The scene the sequencer edits. Blender 5.0 keeps it on the workspace; it must be set
    before a strip modifier takes a mask (headless 5.0.1 crashes otherwise)."""
    ws = getattr(context, "workspace", None)
    if ws is not None and hasattr(ws, "sequencer_scene"):
        if ws.sequencer_scene is None:
            ws.sequencer_scene = context.scene
        return ws.sequencer_scene
    return context.scene


def scene_fps(scene):
    return scene.render.fps / scene.render.fps_base


def source_frame(strip, timeline_frame):
    """The source frame a movie strip shows at ``timeline_frame``: element ``t - frame_start``
    of its content (the file's frames from its hold offset ``animation_offset_start`` on,
    ``frame_duration`` of them), counted from the content's end when the strip plays
    reversed. Valid for strips that show one source frame per scene frame
    (:func:`check_one_to_one`)."""
    length = int(strip.frame_duration)
    i = min(max(round(timeline_frame - strip.frame_start), 0), length - 1)  # held: an end
    if strip.use_reverse_frames:
        i = length - 1 - i
    return int(strip.animation_offset_start) + i


def source_range(scene, strip, whole_clip):
    """Source frames [start, end) to matte and the source frame under the playhead: those the
    strip shows between its trims, or with ``whole_clip`` all of its content."""
    first = source_frame(strip, strip.frame_final_start)
    last = source_frame(strip, strip.frame_final_end - 1)
    current = source_frame(strip, scene.frame_current)
    if whole_clip:
        hold = int(strip.animation_offset_start)
        return hold, hold + int(strip.frame_duration), current
    return min(first, last), max(first, last) + 1, current


def matte_start(strip, start, end):
    """Timeline frame of the matte strip's first image, its images being source frames
    [start, end) in order: where the movie strip shows ``start``, or, reversed (the matte
    plays reversed too), where it shows ``end - 1``."""
    hold, length = int(strip.animation_offset_start), int(strip.frame_duration)
    if strip.use_reverse_frames:
        return round(strip.frame_start) + hold + length - end
    return round(strip.frame_start) + start - hold


def check_one_to_one(scene, strip, path):
    """ValueError unless the strip shows source frame k at timeline frame ``frame_start + k``:
    the matte comes back as an image strip, one image per scene frame. A retimed strip (speed
    keys) and a movie whose rate differs from the scene's, added with *Adjust Playback Rate*
    (the default of Add > Movie: Blender then steps through the source at movie fps / scene
    fps a frame), break that, and the matte would slide off the picture."""
    rate = scene_fps(scene)
    retimed = len(getattr(strip, "retiming_keys", ()))
    other_rate = strip.type == "MOVIE" and abs(strip.fps - rate) > 1e-4 * rate
    if not (retimed or other_rate):
        return  # one source frame per scene frame
    frames = _content_frames(strip, path)
    # the content's length on the timeline, trims included: Blender 5.0 counts a strip's
    # frame_duration in scene frames, 4.2 in source frames, so either can tell
    shown = strip.frame_final_duration + strip.frame_offset_start + strip.frame_offset_end
    if retimed and frames != round(shown):
        # retiming keys at 100 % speed (added, never dragged) keep the length: those pass.
        # RetimingKey gives only its timeline frame, so the speed shows as the length.
        raise ValueError(
            f"the strip {strip.name!r} is retimed ({frames} source frames over "
            f"{round(shown)} scene frames): vosfx mattes it one source frame per scene "
            "frame; reset its speed (Strip > Retiming > Reset Retiming) first"
        )
    if other_rate and not frames == strip.frame_duration == round(shown):
        raise ValueError(
            f"the strip's movie runs at {strip.fps:.3f} fps and the scene at {rate:.3f} "
            f"fps, so Blender plays {frames} source frames over {round(shown)} scene "
            "frames and the matte would not line up; set the scene's frame rate (Output "
            "Properties > Frame Rate) to the movie's first"
        )


def _content_frames(strip, path):
    """The source frames a strip's content holds: its movie's or images' less its hold
    offsets."""
    if strip.type == "MOVIE":
        clip = bpy.data.movieclips.load(path)  # the file's own frame count
        try:
            total = clip.frame_duration
        finally:
            bpy.data.movieclips.remove(clip)
    else:
        total = len(strip.elements)
    return total - strip.animation_offset_start - strip.animation_offset_end


def check_flips(strip):
    """ValueError if the strip is flipped: Blender applies a strip's Mask modifier to the
    flipped picture but renders the mask strip unflipped whatever its own Flip X/Y (checked
    in Blender 5.0), so no matte strip can line up with a flipped picture."""
    flips = [axis for axis in ("x", "y") if getattr(strip, f"use_flip_{axis}")]
    if flips:
        names = " and ".join(f"Flip {axis.upper()}" for axis in flips)
        raise ValueError(
            f"the strip {strip.name!r} is flipped ({names}): Blender does not flip a strip's "
            "mask with it, so the matte would not line up; turn the flip off first (Sidebar > "
            "Strip > Transform > Mirror)"
        )


def sequence_pattern(folder, names):
    """The printf pattern (``shot.%04d.exr``) vosfx reads an image strip's images by, so that
    vosfx's frame i is the strip's image i: its images must be one numbered sequence, in
    order, and every file of the folder with that name and a number must be one of them
    (vosfx reads them all). ValueError with the reason otherwise."""
    parts = [_NUMBERED.fullmatch(name) for name in names]
    if len(names) < 2:
        raise ValueError(
            "the strip is a single image: vosfx mattes clips; add the image sequence "
            "(Add > Image/Sequence, all of its images)"
        )
    if None in parts or len({(m.group(1), m.group(3)) for m in parts if m}) != 1:
        raise ValueError(
            f"the strip's images ({names[0]}, ...) are not one numbered sequence: vosfx reads "
            "images named <name><number><extension>, one number per frame"
        )
    prefix, suffix = parts[0].group(1), parts[0].group(3)
    digits = [m.group(2) for m in parts]
    numbers = [int(d) for d in digits]
    if any(b <= a for a, b in itertools.pairwise(numbers)):
        raise ValueError(
            f"the strip's images ({names[0]}, ...) are not in the order of their numbers"
        )
    width = min(len(d) for d in digits)
    padded = width > 1 and all(d == f"{int(d):0{width}d}" for d in digits)
    number = rf"\d{{{width}}}|[1-9]\d{{{width},}}" if padded else r"\d+"
    same = re.compile(re.escape(prefix) + f"({number})" + re.escape(suffix) + "$")
    on_disk = sorted(
        (int(m.group(1)), name) for name in os.listdir(folder) if (m := same.match(name))
    )
    if [name for _, name in on_disk] != list(names):
        missing = sorted(set(names) - {name for _, name in on_disk})
        detail = f"{missing[0]} is missing" if missing else "the folder holds more of them"
        raise ValueError(
            f"the strip's images are not the whole numbered sequence in {folder} ({detail}); "
            "vosfx reads every image of the sequence: make the strip from all of them"
        )
    return os.path.join(folder, prefix + (f"%0{width}d" if padded else "%d") + suffix)


def source_path(strip):
    """What vosfx reads for the strip: a movie's file, an image strip's sequence pattern."""
    if strip.type == "IMAGE":
        folder = bpy.path.abspath(strip.directory)
        if not os.path.isdir(folder):
            raise ValueError(f"the strip's image folder {folder} does not exist")
        return sequence_pattern(folder, [e.filename for e in strip.elements])
    path = bpy.path.abspath(strip.filepath)
    if not os.path.isfile(path):
        raise ValueError(f"the strip's movie {path} does not exist")
    return path


_PRINTF = re.compile(r"%(0\d+)?d")  # a sequence pattern's frame number: %04d, %d


def clip_stem(path, sequence=False):
    """The output's name stem and default folder for a source: a movie's name beside it (a
    ``%`` in it is a character: ``wide 100%.mp4``), an image sequence's pattern name without
    its frame number (its folder's, when the images are bare numbers) beside its folder."""
    folder, name = os.path.split(path)
    number = _PRINTF.search(name) if sequence else None
    if number is None:
        return os.path.splitext(name)[0], folder
    stem = name[: number.start()].rstrip("._- ") or os.path.basename(folder)
    return stem, os.path.dirname(folder)


def strip_range(scene, strip, whole_clip, playhead=True):
    """(source path, start, end, playhead source frame), checked: what the studio opens on.
    ``playhead=False``: the range only (a pick carries its own prompt frames), the frame is
    then where the playhead would be, on the strip or not."""
    path = source_path(strip)
    check_one_to_one(scene, strip, path)
    check_flips(strip)
    start, end, frame = source_range(scene, strip, whole_clip)
    if playhead and not start <= frame < end:
        raise ValueError(f"put the playhead on the strip (source frames {start}-{end - 1}) first")
    return path, start, end, frame


def plan_job(scene, strip, mask_path, points_text, whole_clip, output_dir, picked=None):
    """A dict with ``job`` (vosfx job description), ``job_path``, ``start``, ``end``,
    ``output`` (the matte folder). ``picked``: a job picked in vosfx studio (its prompts and
    finishing; typed points are the fallback). ValueError with a plain message on user
    mistakes."""
    path, start, end, frame = strip_range(scene, strip, whole_clip, playhead=picked is None)
    prompt = None
    if picked is not None:
        if (picked.get("start"), picked.get("end")) != (start, end):
            raise ValueError("the studio's frame range differs from the strip's; pick again")
    elif mask_path:
        prompt = {"frame": frame, "mask": bpy.path.abspath(mask_path)}
    else:
        points, labels = vosfx_client.parse_points(points_text or "")
        if not points:
            raise ValueError("give a mask image or at least one point")
        prompt = {"frame": frame, "points": points, "labels": labels}
    stem, beside = clip_stem(path, sequence=strip.type == "IMAGE")
    folder = bpy.path.abspath(output_dir) if output_dir else beside
    output = os.path.join(folder, f"{stem}_vosfx_{start}-{end - 1}")
    if picked is not None:
        job = vosfx_client.job_from_pick(
            picked, output, presets=(), overwrite=True, output_overrides={"format": MATTE_FORMAT}
        )
    else:
        job = vosfx_client.build_job(
            path,
            output,
            [prompt],
            start=start,
            end=end,
            presets=(),
            overrides={"output": {"format": MATTE_FORMAT}},
            overwrite=True,
        )
    if strip.type == "IMAGE":  # an image sequence plays at the scene's rate
        job["fps"] = scene_fps(scene)
    fd, job_path = tempfile.mkstemp(prefix="vosfx_blender_", suffix=".json")
    os.close(fd)
    return {"job": job, "job_path": job_path, "start": start, "end": end, "output": output}


def _free_channel(ed, strip):
    """The lowest channel above ``strip`` with nothing overlapping its frames."""
    lo, hi = strip.frame_final_start, strip.frame_final_end
    busy = {
        s.channel for s in strips_all(ed) if s.frame_final_start < hi and s.frame_final_end > lo
    }
    channel = strip.channel + 1
    while channel in busy:
        channel += 1
    return channel


# What the matte strip copies from its movie strip, so that both land on the same pixels of
# the frame Blender renders: the Mask modifier reads the matte strip as rendered, with its own
# placement, after the movie strip's own (checked in a real Blender: a movie strip moved 300 px
# to the right kept its matte where it was).
FOLLOWED = (
    "transform.offset_x",
    "transform.offset_y",
    "transform.scale_x",
    "transform.scale_y",
    "transform.rotation",
    "transform.origin",
    "transform.filter",
    "crop.min_x",
    "crop.max_x",
    "crop.min_y",
    "crop.max_y",
    "use_reverse_frames",
)
SOURCE_KEY = "vosfx_source"  # the matte strip's source frames [start, end), a custom property
OWNER_KEY = "vosfx_strip"  # the name of the strip the matte was made for


def _owner(strip, path):
    *parents, name = path.split(".")
    for parent in parents:
        strip = getattr(strip, parent)
    return strip, name


def follow(strip, matte):
    """Bring ``matte`` onto ``strip``: its placement in the frame (move, scale, rotation,
    crop) and in time (the frame where each of its images is the source frame the
    movie shows, reversed with it). Writes only what differs, and says whether it wrote:
    it runs from Blender's update handlers, where a write is another update."""
    changed = False
    for path in FOLLOWED:
        src, name = _owner(strip, path)
        dst, _ = _owner(matte, path)
        value = getattr(src, name)
        if path == "transform.origin":
            if tuple(getattr(dst, name)) != tuple(value):
                setattr(dst, name, tuple(value))
                changed = True
        elif getattr(dst, name) != value:
            setattr(dst, name, value)
            changed = True
    source = matte.get(SOURCE_KEY)
    if source is not None:
        start = matte_start(strip, int(source[0]), int(source[1]))
        if round(matte.frame_start) != start:
            matte.frame_start = start
            changed = True
    return changed


def follow_all(scene):
    """:func:`follow` for every movie strip of ``scene`` masked by a vosfx matte: the matte
    stays on its strip when the strip is moved, scaled, rotated, reversed or slid in time.
    Not flipped: Blender renders a mask strip unflipped whatever its Flip X/Y, so a flip
    cannot be followed (:func:`check_flips` refuses flipped strips).

    A matte used by several strips (a strip duplicated with its modifier) follows one: the
    strip it was made for (its name is kept on the matte), else none, so that two strips
    never pull it back and forth, one update after the other."""
    ed = scene.sequence_editor if scene is not None else None
    if ed is None:
        return False
    users = {}
    for strip in strips_all(ed):
        mod = strip.modifiers.get(MODIFIER_NAME) if strip.type in STRIP_TYPES else None
        matte = getattr(mod, "input_mask_strip", None)
        if matte is not None and SOURCE_KEY in matte:
            users.setdefault(matte.name, (matte, []))[1].append(strip)
    changed = False
    for matte, strips_using in users.values():
        owner = [s for s in strips_using if s.name == matte.get(OWNER_KEY)]
        if not owner and len(strips_using) == 1:  # the strip was renamed: still its own
            owner = strips_using
            matte[OWNER_KEY] = owner[0].name
        if len(owner) == 1:
            changed |= follow(owner[0], matte)
    return changed


def _remove_old_matte(ed, strip):
    """Remove the matte strip an earlier run made for ``strip`` (its modifier's input, made
    for this strip), unless another strip's modifier uses it too, so that a re-run replaces
    it instead of leaving a muted strip behind on a channel of its own."""
    mod = strip.modifiers.get(MODIFIER_NAME)
    old = getattr(mod, "input_mask_strip", None)
    if old is None or SOURCE_KEY not in old or old.get(OWNER_KEY) != strip.name:
        return
    for other in strips_all(ed):
        used = other.modifiers.get(MODIFIER_NAME) if other.type in STRIP_TYPES else None
        if other != strip and used is not None and used.input_mask_strip == old:
            return
    strip.modifiers.remove(mod)
    if old.name in strips(ed):  # where the add-on put it (not moved into a meta strip)
        strips(ed).remove(old)


def apply_matte(context, scene, strip, plan, result_event):
    """Load the matte sequence as a muted image strip aligned frame for frame with the movie
    strip and make it the movie strip's Mask modifier input. Returns the image strip."""
    folder = result_event["outputs"][0]
    files = sorted(f for f in os.listdir(folder) if f.endswith(".png"))
    if not files:
        raise RuntimeError(f"vosfx wrote no matte images into {folder}")
    ed = scene.sequence_editor
    _remove_old_matte(ed, strip)
    matte = strips(ed).new_image(
        name=strip.name + " matte",
        filepath=os.path.join(folder, files[0]),
        channel=_free_channel(ed, strip),
        # the matte's first image is source frame plan["start"] (a position): not the number
        # in its name, which is a numbered image-sequence source's own (shot.1001.exr)
        frame_start=matte_start(strip, plan["start"], plan["end"]),
    )
    for name in files[1:]:
        matte.elements.append(name)
    matte[SOURCE_KEY] = [int(plan["start"]), int(plan["end"])]
    matte[OWNER_KEY] = strip.name
    matte.colorspace_settings.name = "Non-Color"  # a matte is data, not an sRGB picture
    matte.mute = True  # it only feeds the modifier
    follow(strip, matte)
    sequencer_scene(context)  # must be set before the modifier takes a strip mask
    old = strip.modifiers.get(MODIFIER_NAME)
    if old is not None:
        strip.modifiers.remove(old)
    mod = strip.modifiers.new(MODIFIER_NAME, "MASK")
    mod.input_mask_type = "STRIP"
    mod.input_mask_strip = matte
    return matte
