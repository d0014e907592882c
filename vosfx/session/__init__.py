"""The incremental clip session: prompts on any frame for any object, tracked both ways from
each object's own prompts, corrections that stick (``clip.py``), the rule as passes (``plan.py``); results and stashed frames on
disk (``store.py``); random access to a clip's frames (``frames.py``)."""

from vosfx.session.clip import ClipSession, FrameProvider, Sweep
from vosfx.session.plan import PassPlan, plan_object

__all__ = ["ClipSession", "FrameProvider", "PassPlan", "Sweep", "plan_object"]
