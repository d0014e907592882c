"""What the Resolve script does, host calls aside: plan the job (frame range, prompt, outputs),
run vosfx, bring the result back through the adapter (api.py)."""

import os
import tempfile

import vosfx_client

from vosfx_resolve import api

ALPHA_FORMAT = "prores4444"  # cut-out with alpha, for the track above
MATTE_FORMAT = "prores422hq-matte"  # luma matte, for the clip's external matte (Color page)


class Options:
    """The user's choices. ``mask_path``: a mask image for ``prompt_frame``; or ``points``:
    [(x, y, label)] in source pixels, label 1 = object, 0 = background. ``prompt_frame``:
    source frame of the prompt (None: the frame under the playhead). ``attach``: add the matte
    to the clip (this mattes the whole source clip, so the matte has exactly the clip's
    frames); ``place``: put the alpha clip on the track above; ``output_dir``: None = beside
    the source file."""

    def __init__(
        self,
        mask_path=None,
        points=(),
        prompt_frame=None,
        attach=True,
        place=True,
        output_dir=None,
        picked=None,
    ):
        self.picked = picked  # a job picked in vosfx studio (its prompts and finishing)
        self.mask_path = mask_path
        self.points = list(points)
        self.prompt_frame = prompt_frame
        self.attach = attach
        self.place = place
        self.output_dir = output_dir


class Plan:
    """``start``/``end``: vosfx's frames [start, end) (positions among an image sequence's
    files); ``source_start``: Resolve's source position of ``start`` (its frame numbers
    counted, as GetLeftOffset counts them), where the alpha clip's frame 0 belongs."""

    def __init__(self, job, start, end, alpha_path, matte_path, source_start=None):
        self.job, self.start, self.end = job, start, end
        self.alpha_path, self.matte_path = alpha_path, matte_path
        self.source_start = start if source_start is None else source_start


def _gap_message(ctx, missing, frames, what):
    shown = ", ".join(str(n) for n in missing[:5]) + (", ..." if len(missing) > 5 else "")
    return (
        f"the image sequence {os.path.basename(ctx.path)} has no image for frame number"
        f"{'s' if len(missing) > 1 else ''} {shown}: Resolve counts a missing number as a "
        f"frame and vosfx reads the images present, so {what} cannot have the clip's "
        f"{frames} frames; fill the gap (render or copy the missing images) first"
    )


def source_range(ctx, options):
    """(first, end, frame) in Resolve's source positions: the frames to matte [first, end)
    (the whole clip when attaching a clip matte, else the range the timeline uses) and the
    prompt's frame (the playhead's unless given)."""
    if options.attach:
        if not ctx.source_frames:
            raise api.ResolveError("Resolve did not report the clip's frame count")
        first, end = 0, ctx.source_frames
    else:
        first, end = ctx.source_in, ctx.source_out
    frame = options.prompt_frame
    if frame is None:
        frame = ctx.playhead_source if ctx.playhead_source is not None else ctx.source_in
    if not first <= frame < end:
        raise api.ResolveError(
            f"the prompt's frame {frame} is outside the frames to matte ({first}-{end - 1})"
        )
    return first, end, frame


def job_range(ctx, options):
    """(start, end, frame) in vosfx's frames (:func:`source_range` mapped: an image
    sequence's positions among its files): what to matte and the prompt's frame. Refused,
    with the reason, where the matte could not have exactly the frames Resolve shows: a
    retimed clip or one at another rate than the timeline's (:func:`api.check_one_to_one`),
    and an image sequence with a gap in the frames to matte."""
    api.check_one_to_one(ctx)
    first, end, frame = source_range(ctx, options)
    missing = ctx.missing(first, end)
    if missing:
        what = "a clip matte" if options.attach else "the alpha clip"
        raise api.ResolveError(_gap_message(ctx, missing, end - first, what))
    start = ctx.to_vosfx(first)
    return start, start + end - first, start + frame - first


def pick_in_studio(ctx, options, command, env=None):
    """ "Pick in vosfx studio": a :class:`vosfx_client.StudioPick` (started) on the clip's
    range at the playhead; poll ``running``, then ``picked()`` into ``options.picked``."""
    start, end, frame = job_range(ctx, options)
    fps = getattr(ctx, "clip_fps", None)  # an image sequence's rate
    pick = vosfx_client.StudioPick(command, ctx.path, start, end, frame, env=env, fps=fps)
    return pick.start()


def plan_job(ctx, options):
    """The vosfx job for ``ctx`` (an :class:`api.ClipContext`) over :func:`job_range`: the
    prompts and finishing picked in the studio, else a mask image or typed points."""
    start, end, frame = job_range(ctx, options)
    source_start = source_range(ctx, options)[0]
    prompt = None
    if options.picked is None:
        if options.mask_path:
            prompt = {"frame": frame, "mask": options.mask_path}
        elif options.points:
            prompt = {
                "frame": frame,
                "points": [[x, y] for x, y, _ in options.points],
                "labels": [int(lab) for _, _, lab in options.points],
            }
        else:
            raise api.ResolveError(
                "pick in vosfx studio, or pick a mask image or enter at least one point"
            )
    folder = options.output_dir or os.path.dirname(ctx.path)
    stem = os.path.splitext(os.path.basename(ctx.path))[0]
    number = api.sequence_number(stem) if getattr(ctx, "is_sequence", False) else None
    if number is not None:  # an image sequence: its name without the frame number
        stem = stem[: number.start()].rstrip("._- ") or os.path.basename(folder)
    # the range is in the name: a clip used twice gets two mattes, a re-run replaces its own
    base = os.path.join(folder, f"{stem}_vosfx_{start}-{end - 1}")
    alpha, matte = base + ".mov", f"{base}.{MATTE_FORMAT}.mov"
    extra = (MATTE_FORMAT,) if options.attach else ()
    if options.picked is not None:
        if (options.picked.get("start"), options.picked.get("end")) != (start, end):
            raise api.ResolveError("the studio's frame range differs from the clip's; pick again")
        job = vosfx_client.job_from_pick(
            options.picked, alpha, presets=(ALPHA_FORMAT,), overwrite=True, extra_formats=extra
        )
    else:
        job = vosfx_client.build_job(
            ctx.path,
            alpha,
            [prompt],
            start=start,
            end=end,
            presets=(ALPHA_FORMAT,),
            overwrite=True,
            extra_formats=extra,
        )
    if getattr(ctx, "clip_fps", None):  # an image sequence: its rate for vosfx's files
        job["fps"] = ctx.clip_fps
    return Plan(job, start, end, alpha, matte, source_start)


def render(plan, command, on_event=None, should_cancel=None, env=None):
    """Run vosfx on the plan (blocking; ``on_event`` sees each JSON event, ``should_cancel``
    is polled ~10x/s). Returns the :class:`vosfx_client.RenderResult`."""
    folder = tempfile.mkdtemp(prefix="vosfx_resolve_")
    job_path = vosfx_client.write_job(plan.job, os.path.join(folder, "job.json"))
    try:
        return vosfx_client.run(
            command, job_path, on_event=on_event, should_cancel=should_cancel, env=env
        )
    finally:
        os.remove(job_path)
        os.rmdir(folder)


def bring_back(resolve, ctx, plan, result, options):
    """Attach the matte and/or place the alpha clip. Returns a one-line summary."""
    outputs = result.result["outputs"]
    done = []
    if options.attach:
        matte = [p for p in outputs if p == plan.matte_path]
        if not matte or not api.attach_matte(resolve, ctx, matte):
            raise api.ResolveError(f"Resolve did not accept the matte {plan.matte_path}")
        done.append(f"matte attached to {ctx.name}")
    if options.place:
        _item, refused = api.place_above(ctx, plan.alpha_path, first_frame=plan.source_start)
        if refused is None:  # no GetProperty(): an older Resolve
            done.append(f"alpha clip on video track {ctx.track + 1} (frame it as the clip)")
        else:
            done.append(f"alpha clip on video track {ctx.track + 1}, framed as the clip")
        if refused:
            done.append("Resolve kept its own " + ", ".join(refused) + ": set them by hand")
    return "; ".join(done) or "written: " + ", ".join(outputs)


def main(resolve=None, fusion=None, bmd=None, support_dir=None):
    """Entry point of the Workspace > Scripts menu item."""
    if resolve is None and bmd is not None:
        resolve = bmd.scriptapp("Resolve")
    if fusion is None and resolve is not None:
        fusion = resolve.Fusion()
    command = vosfx_client.load_command(support_dir or os.path.dirname(vosfx_client.__file__))
    from vosfx_resolve.ui import Dialog

    Dialog(resolve, fusion, bmd, command).run()


def parse_points(text):
    """``"420,300 -80,40"`` -> [(420.0, 300.0, 1), (80.0, 40.0, 0)] (the shared parser of
    ``vosfx_client``); ResolveError when malformed."""
    try:
        points, labels = vosfx_client.parse_points(text)
    except ValueError as err:
        raise api.ResolveError(str(err)) from None
    return [(x, y, label) for (x, y), label in zip(points, labels)]


def progress_text(event):
    """One status line from a ``frame`` event: ``[#####.....] 5/10 frames, 2.0 fps, ETA
    01:15`` (a 24-cell bar; a count past its total is drawn full, a negative ETA as 00:00)."""
    done, total, eta = vosfx_client.progress_of(event)
    filled = round(24 * done / total) if total else 0
    text = "[{}{}] {}/{} frames, {:.1f} fps".format(
        "#" * filled, "." * (24 - filled), done, total, float(event.get("fps") or 0.0)
    )
    if eta is not None:
        minutes, seconds = divmod(round(eta), 60)
        text += f", ETA {minutes:02d}:{seconds:02d}"
    return text
