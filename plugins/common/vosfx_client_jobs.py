"""The job a host hands to ``vosfx matte --job``: typed points, the version-1 job description,
and the render job made from a studio pick (part of the host client, ``vosfx_client``;
standard library only)."""

import json

PROTOCOL_VERSION = 1


def parse_points(text):
    """Typed clicks, the fallback when the studio cannot be used: ``"420,300 -80,40"`` ->
    ([[420.0, 300.0], [80.0, 40.0]], [1, 0]). x,y in source pixels, separated by spaces or
    ``;``; a leading ``-`` marks an exclude (background) point. ValueError when malformed."""
    points, labels = [], []
    for token in text.replace(";", " ").split():
        try:
            x, y = (float(v) for v in token.lstrip("+-").split(","))
        except ValueError:
            raise ValueError(
                f"a point is x,y in source pixels (e.g. 420,300), found {token!r}"
            ) from None
        points.append([x, y])
        labels.append(0 if token.startswith("-") else 1)
    return points, labels


def build_job(
    input_path,
    output,
    prompts,
    start=0,
    end=None,
    presets=("prores4444",),
    overrides=None,
    overwrite=False,
    extra_formats=(),
):
    """A version-1 job description (a dict ready for JSON).

    ``prompts``: list of dicts, each ``{"frame": int, "mask": path}`` or ``{"frame": int,
    "points": [[x, y], ...], "labels": [1|0, ...]}`` in source pixels, frame = source frame
    index (0-based). ``start``/``end``: source frame range, end exclusive (None: to the end).
    ``extra_formats``: further format ids written in the same pass beside ``output``.
    """
    if not prompts:
        raise ValueError("a job needs at least one prompt (a mask image or points)")
    job = {
        "version": PROTOCOL_VERSION,
        "input": str(input_path),
        "output": str(output),
        "presets": list(presets),
        "prompts": list(prompts),
        "start": int(start),
        "end": None if end is None else int(end),
        "overwrite": bool(overwrite),
    }
    if overrides or extra_formats:
        job["overrides"] = dict(overrides or {})
        if extra_formats:
            out = dict(job["overrides"].get("output", {}))
            out["extra_formats"] = list(extra_formats)
            job["overrides"]["output"] = out
    return job


def write_job(job, path):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(job, f, indent=2)
    return path


def job_from_pick(
    picked,
    output,
    presets=("prores4444",),
    overwrite=False,
    extra_formats=(),
    output_overrides=None,
):
    """The host's render job from a studio pick: its prompts, range and finishing (model,
    memory and refine settings), with the host's own output, format presets and extras (the
    studio's output section is dropped, so the host's presets decide the files)."""
    overrides = {k: v for k, v in (picked.get("overrides") or {}).items() if k != "output"}
    if output_overrides:
        overrides["output"] = dict(output_overrides)
    return build_job(
        picked["input"],
        output,
        picked["prompts"],
        start=picked.get("start", 0),
        end=picked.get("end"),
        presets=presets,
        overrides=overrides,
        overwrite=overwrite,
        extra_formats=extra_formats,
    )
