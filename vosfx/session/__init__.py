"""The incremental clip session: prompts on any frame for any object, tracked both ways from
each object's own prompts, corrections that stick (``clip.py``), the rule as passes
(``plan.py``), the prompts and the passes they leave stale (``prompts.py``), one visit of the
frames doing the stale work (``sweep.py``); results and stashed frames on disk (``store.py``);
the frames' shot ids (``shotlog.py``); random access to a clip's frames (``frames.py``)."""

from vosfx.session.clip import ClipSession, FrameProvider
from vosfx.session.plan import PassPlan, plan_object
from vosfx.session.sweep import Sweep

__all__ = ["ClipSession", "FrameProvider", "PassPlan", "Sweep", "plan_object"]
