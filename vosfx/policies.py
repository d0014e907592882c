"""The table of memory policies: one row per ``[memory] policy`` name.

Config validation, the CLI's ``--memory`` choices, ``vosfx eval``, the docs and the tests all
read this table; :func:`vosfx.engine.policies.make_policy` builds a policy from its row. It is
plain data (the class is named by its import path), so the config layer can read it without
importing the engine.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PolicySpec:
    """One memory policy.

    ``factory``: ``"module:Class"`` of the policy class (one instance per object).
    ``options``: ``[memory]`` keys the policy reads, mapped to its constructor's keyword
    arguments. ``needs_shots``: the pipeline runs the shot detector and passes shot ids.
    ``deferred``: the tracker revises frames when a pass ends (``Tracker.end_pass``), so
    the session tracks every frame before writing any.
    """

    name: str
    factory: str
    options: tuple[tuple[str, str], ...]
    needs_shots: bool
    description: str
    deferred: bool = False  # a frame's mask is final only when its pass ends (SAM2Long)


_RCMS_OPTIONS = (
    ("rcms_max_promote", "max_promote"),
    ("rcms_threshold", "threshold"),
    ("max_cond_frames", "max_cond_frames"),
    ("skip_absent", "skip_absent"),
)

MEMORY_POLICIES: dict[str, PolicySpec] = {
    spec.name: spec
    for spec in (
        PolicySpec(
            "sam2",
            "vosfx.engine.policies.sam2:Sam2Policy",
            (),
            False,
            "SAM 2's own memory: prompted frames plus the last 6 frames, exactly as the "
            "official predictor.",
        ),
        PolicySpec(
            "rcms",
            "vosfx.engine.policies.rcms:RcmsPolicy",
            _RCMS_OPTIONS,
            False,
            "RCMS (MOSEv2): when the object disappears, reliable recent frames are promoted "
            "into conditioning memory so it is found again.",
        ),
        PolicySpec(
            "rcms+shots",
            "vosfx.engine.policies.rcms:ShotAwarePolicy",
            _RCMS_OPTIONS,
            True,
            "RCMS plus shot cuts: at a cut, memory of the earlier shot stops being attended "
            "and the object's reliable frames of a returning shot are promoted.",
        ),
        PolicySpec(
            "samurai",
            "vosfx.engine.policies.samurai:SamuraiPolicy",
            (),
            False,
            "SAMURAI: a Kalman filter on the mask's box picks among the decoder's candidates; "
            "recent memory only from frames whose IoU, object and motion scores pass.",
        ),
        PolicySpec(
            "sam2long",
            "vosfx.engine.policies.sam2long:Sam2LongPolicy",
            (),
            False,
            "SAM2Long: 3 memory pathways per object, pruned by cumulative IoU score; masks "
            "are read along the best pathway when tracking ends.",
            deferred=True,
        ),
        PolicySpec(
            "dam4sam",
            "vosfx.engine.policies.dam4sam:Dam4samPolicy",
            (),
            False,
            "DAM4SAM: confident frames with a distractor nearby join a distractor-resolving "
            "memory; recent memory every 5th frame where the object is visible.",
        ),
    )
}
