"""vosfx studio: a local page for prompts, live masks, tracking, finishing and render.

``state.py`` holds one clip's studio (the engine session, finishing, what the page reads; the
prompts as the user made them and undo in ``prompts.py``, track and render in ``tasks.py``);
``server.py`` serves the page (``static/``) and its JSON API on 127.0.0.1 with a per-run
token; ``views.py`` draws what the page shows. docs/studio.md.
"""

from vosfx.studio.state import FramePrompt, Studio

__all__ = ["FramePrompt", "Studio"]
