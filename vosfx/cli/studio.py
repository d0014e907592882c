"""`vosfx studio`: the local page for prompts, live masks, tracking, finishing and render."""

from __future__ import annotations

from pathlib import Path

import click

from vosfx.cli.flags import FPS, model_options


@click.command()
@click.argument("clip", required=False)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=0,
    show_default=True,
    help="Port on 127.0.0.1 (0: any free port).",
)
@click.option("--no-browser", is_flag=True, help="Print the page's address; do not open it.")
@click.option(
    "--job",
    "job_file",
    type=click.Path(dir_okay=False),
    help="Reopen a saved job (its clip, prompts, range and finishing).",
)
@click.option(
    "-p", "--preset", "presets", multiple=True, help="Preset name; repeat to combine (later wins)."
)
@click.option("--start", type=int, help="First frame of the range (0-based).")
@click.option("--end", type=int, help="Stop before this frame.")
@click.option("--frame", type=int, help="Open on this frame (an editor's playhead).")
@click.option("--fps", type=FPS, help="Frame rate of an image-sequence input (default 24).")
@click.option(
    "--done-job",
    type=click.Path(dir_okay=False),
    help="Editor plugins: show Done; write the job here and exit when it is pressed.",
)
@click.option("--offline", is_flag=True, help="Never download models (same as VOSFX_OFFLINE=1).")
@click.option(
    "--no-warm",
    is_flag=True,
    help="Do not run the image encoder on the frame shown before a click there (the first "
    "click on a frame then waits for it).",
)
@model_options
def studio(
    clip,
    port,
    no_browser,
    job_file,
    presets,
    start,
    end,
    frame,
    fps,
    done_job,
    offline,
    no_warm,
    **model_flags,
):
    """Open CLIP (video file, image folder or %05d pattern) in the studio page: click the
    object, see its mask, track, correct any frame, finish and render. The model flags are
    `vosfx matte`'s; with --job they replace the job's own. Prompts not saved when the studio
    ends (a closed page, Ctrl-C) are kept, and offered back when CLIP is opened again."""
    import os
    import shutil

    from vosfx.cli.flags import check_fps, check_range, model_overrides
    from vosfx.errors import Cancelled
    from vosfx.session.frames import SourceFrames
    from vosfx.studio.server import Control, bind, serve

    if offline:
        os.environ["VOSFX_OFFLINE"] = "1"
    check_fps(fps)
    # checked before the clip is opened; a saved job carries --checkpoint, absolute
    overrides = model_overrides(model_flags, absolute_checkpoint=True)
    typed = {"--start": start is not None, "--end": end is not None}  # before a job's fill in
    job = None
    if job_file:
        from vosfx.job import load_job_file

        if clip:
            raise click.UsageError("--job names the clip: give CLIP or --job, not both")
        job = load_job_file(job_file, cli_overrides=overrides)
        clip, fps = job.input, job.fps if fps is None else fps
        start = job.start if start is None else start
        end = job.end if end is None else end
        config, preset_names = job.config, job.presets
    else:
        from vosfx.presets import resolve_config

        if not clip:
            raise click.UsageError("missing CLIP: a video file, an image folder or a %05d pattern")
        config, preset_names = resolve_config(presets, overrides), tuple(presets)
    with SourceFrames(clip, fps=fps) as probe:  # an unreadable clip fails here, before serving
        info = probe.info
    num_frames = info.num_frames
    start = start or 0
    end_at = num_frames if end is None else min(end, num_frames)
    # checked here, in `vosfx matte`'s words: the page could only show it
    if start < 0:
        raise click.BadParameter(f"expected a frame >= 0, found {start}", param_hint="--start")
    # one end the job's: as `vosfx matte --job` says it
    from_job = job is not None and not all(typed.values())
    check_range(start, end, from_job=from_job, end_typed=typed["--end"])
    if start >= num_frames:
        from vosfx.errors import StartPastEndError
        from vosfx.pipeline.loop import positions_hint

        said = (
            f"{start} is past the clip's last frame ({num_frames - 1}; it has {num_frames} "
            f"frames){positions_hint(info)}"
        )
        if not typed["--start"]:  # the job file's own start: its error, as matte --job's
            raise StartPastEndError(f"job file {job_file}: start {said}")
        raise click.BadParameter(said, param_hint="--start")
    if frame is not None and not start <= frame < end_at:
        raise click.BadParameter(
            f"frame {frame} is outside {start}..{end_at - 1}", param_hint="--frame"
        )
    if job is not None:  # a mask file gone or a point outside: as `vosfx matte --job` says
        from vosfx.pipeline import resolve_prompts

        resolve_prompts(
            job.prompts, info, fit=job.fit, objects=job.objects, start=start, end=end_at
        )
    sock = bind(port)
    ctl = Control(
        port=sock.getsockname()[1],
        frame=frame,
        done_job=Path(done_job).resolve() if done_job else None,
    )
    engines: list = []

    from vosfx.studio import autosave
    from vosfx.studio.jobfile import saved_job_for

    # a kept session reopened (vosfx studio --job <kept job>): Save job proposes a name beside
    # the clip, not the cache; the session counts as unsaved until saved there
    reopened_kept = job_file is not None and autosave.is_recovered(Path(job_file), autosave.root())
    autosave.sweep(autosave.root())  # a studio killed earlier: its session kept, said below

    from vosfx.cli.progress import LogProgress
    from vosfx.types import ProgressEvent

    said = LogProgress("vosfx studio")  # a line every 5 s in the terminal

    def download_progress(done: int, total: int | None) -> None:
        """A first run's model download: said by the page (its state) and the terminal."""
        message = f"downloading {config.model.name}"
        ctl.loading = {"message": message, "done": done, "total": total or 0}
        said(ProgressEvent("download", done, total or 0, message=message))

    def load():
        from vosfx.engine import load_engine, log_warnings
        from vosfx.studio.state import Studio, new_workdir
        from vosfx.studio.warm import WARM_DELAY_S

        engine = load_engine(config.model, progress=download_progress)
        ctl.loading = None
        log_warnings(engine)  # the renders' results say them again, with each render
        engines.append(engine)
        workdir = new_workdir()
        try:
            st = Studio(
                clip,
                engine=engine,
                config=config,
                presets=preset_names,
                start=start,
                end=end,
                fps=fps,
                workdir=workdir,
                warm_delay_s=None if no_warm else WARM_DELAY_S,
                output=job.output if job is not None else None,
                job_path=str(Path(job_file).resolve()) if job_file and not reopened_kept else None,
            )
        except BaseException:
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        try:
            if job is not None:
                st.restore(job)
            if reopened_kept:  # its files are this studio's now: kept again if not saved
                st.changed()
                autosave.discard(Path(job_file))
            if not st.objects:
                st.add_object()
        except BaseException:
            st.close()  # its threads, decoders, session scratch and workdir
            raise
        return st

    def ready(url: str) -> None:
        click.echo(f"vosfx studio: {url}")
        click.echo("Ctrl-C stops the studio.", err=True)
        if job is not None:
            return
        name = autosave.clip_name(clip)
        kept = autosave.recovered_for(name, autosave.root())
        if kept:
            click.echo(
                f"vosfx studio: a session of this clip that ended unsaved is kept in {kept[0]}: "
                "Restore in the page, or vosfx studio --job with that file",
                err=True,
            )
        saved = saved_job_for(name)
        if saved is not None:
            click.echo(
                f"vosfx studio: a job of this clip is saved in {saved}: Open in the page", err=True
            )

    try:
        outcome = serve(ctl, sock, load, open_browser=not no_browser, on_ready=ready)
    finally:
        for engine in engines:
            engine.close()
    if outcome == "closed":
        click.echo("vosfx studio: the page was closed; the studio stopped", err=True)
    kept_job = getattr(ctl.studio, "recovered_job", None)
    if kept_job is not None:
        click.echo(
            f"vosfx studio: the prompts were not saved; they are kept in {kept_job} "
            f"(vosfx studio --job {kept_job} reopens them, as does Restore when this clip "
            "is opened again)",
            err=True,
        )
    if outcome == "interrupted" or (outcome == "closed" and ctl.done_job is not None):
        raise Cancelled(
            "studio closed before Done; nothing was written"
            if ctl.done_job is not None
            else "cancelled"
        )
    if outcome == "done":
        click.echo(str(ctl.done_job))
