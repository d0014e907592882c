"""vosfx Matte for Blender's Video Sequencer.

Select a movie strip (or an image-sequence strip), put the playhead on a frame where the object is visible, then Strip >
Pick in vosfx studio: the studio page opens on the strip's frames at the playhead; click the
object, track, finish, press Done. (Strip > vosfx Matte takes a mask image or typed points
``x,y`` in source pixels instead, the fallback.) vosfx runs in the background (progress in the status bar, Esc cancels); the
matte comes back as a muted image strip, used by a Mask modifier on the movie strip, so the
cut-out shows in the preview and renders with alpha (RGBA PNG/EXR/TIFF output).

The add-on never imports vosfx: it runs the `vosfx` executable recorded by
`vosfx plugins install blender` (or the one set in the add-on's preferences).
"""

import os
import time
from typing import TYPE_CHECKING

import bpy
from bpy.props import BoolProperty, FloatProperty, StringProperty

if TYPE_CHECKING:  # `vosfx plugins install blender` copies plugins/common's client in here
    from plugins.common import vosfx_client
else:
    from . import vosfx_client
from .plan import (
    STRIP_TYPES,
    apply_matte,
    follow_all,
    plan_job,
    scene_fps,
    sequencer_scene,
    strip_range,
)

bl_info = {
    "name": "vosfx Matte",
    "author": "vosfx",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "Video Sequencer > Strip > vosfx Matte",
    "description": "SAM 2 mattes for movie and image strips (runs the vosfx executable)",
    "category": "Sequencer",
}

ADDON_DIR = os.path.dirname(os.path.abspath(__file__))
# what the status bar shows while a render runs; "busy": one runs (they share the bar)
_state = {"text": "", "factor": 0.0, "busy": False}
KILL_AFTER_S = 10.0  # Esc: SIGTERM to vosfx's process group, SIGKILL if it still runs then
BUSY = "a vosfx render or studio pick is already running: wait for it, or press Esc"


class VosfxPreferences(bpy.types.AddonPreferences):
    bl_idname = __package__

    vosfx_executable: StringProperty(
        name="vosfx executable",
        subtype="FILE_PATH",
        default="",
        description="Path of the vosfx command; empty: the one `vosfx plugins install` recorded",
    )

    def draw(self, context):
        self.layout.prop(self, "vosfx_executable")
        self.layout.label(text="Recorded: " + " ".join(vosfx_client.load_command(ADDON_DIR)))


def _command(context):
    prefs = context.preferences.addons.get(__package__)
    exe = prefs.preferences.vosfx_executable if prefs is not None else ""
    return [bpy.path.abspath(exe)] if exe else vosfx_client.load_command(ADDON_DIR)


def _draw_status(self, context):
    if _state["text"]:
        self.layout.progress(factor=_state["factor"], type="BAR", text=_state["text"])


def _redraw(context):
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("STATUSBAR", "SEQUENCE_EDITOR"):
                area.tag_redraw()


class SEQUENCER_OT_vosfx_matte(bpy.types.Operator):
    """Matte the active movie or image-sequence strip with vosfx (SAM 2) and mask it with
    the result"""

    bl_idname = "sequencer.vosfx_matte"
    bl_label = "vosfx Matte"
    bl_options = {"REGISTER", "UNDO"}  # noqa: RUF012 (the Blender idiom)

    mask_path: StringProperty(
        name="Mask image", subtype="FILE_PATH", description="White = object, on the current frame"
    )
    points: StringProperty(
        name="Points",
        description="x,y in source pixels on the current "
        "frame, space separated; a leading - marks background",
    )
    whole_clip: BoolProperty(
        name="Whole clip",
        default=False,
        description="Matte every source frame, not only the used range",
    )
    output_dir: StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        description="Empty: beside the movie file or image folder",
    )
    timeout_s: FloatProperty(name="Timeout (blocking runs)", default=0.0, min=0.0)

    @classmethod
    def poll(cls, context):
        scene = sequencer_scene(context)
        ed = scene.sequence_editor if scene else None
        strip = ed.active_strip if ed else None
        return strip is not None and strip.type in STRIP_TYPES

    def _plan(self, context):
        scene = sequencer_scene(context)
        strip = scene.sequence_editor.active_strip
        return (
            scene,
            strip,
            plan_job(scene, strip, self.mask_path, self.points, self.whole_clip, self.output_dir),
        )

    def execute(self, context):
        """In a window: render in the background (modal, status-bar progress). Without one
        (scripts, ``blender --background``): block until vosfx is done."""
        if _state["busy"]:
            self.report({"ERROR"}, BUSY)
            return {"CANCELLED"}
        if context.window is not None and not bpy.app.background:
            return self._start_modal(context)
        try:
            scene, strip, plan = self._plan(context)
        except ValueError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        job_path = vosfx_client.write_job(plan["job"], plan["job_path"])
        try:
            result = vosfx_client.run(_command(context), job_path)
        except vosfx_client.VosfxNotFound as err:
            return self._fail(plan, err)
        return self._finish(context, scene, strip, plan, result)

    def _fail(self, plan, err):
        """vosfx could not be started: say so, leave no job file (nor a pick's folder)."""
        _end(self)
        if os.path.isfile(plan["job_path"]):
            os.remove(plan["job_path"])
        self.report({"ERROR"}, str(err))
        return {"CANCELLED"}

    def _finish(self, context, scene, strip, plan, result):
        _end(self)
        if os.path.isfile(plan["job_path"]):
            os.remove(plan["job_path"])
        if not result.ok:
            self.report({"WARNING"} if result.cancelled else {"ERROR"}, result.message())
            return {"CANCELLED"}
        try:
            name = strip.name
            matte_strip = apply_matte(context, scene, strip, plan, result.result)
        except ReferenceError:  # the strip was deleted (or undone away) while vosfx ran
            self.report(
                {"WARNING"},
                "vosfx wrote "
                + ", ".join(result.result.get("outputs", []))
                + "; the strip was deleted while it ran: nothing was attached",
            )
            return {"CANCELLED"}
        self.report(
            {"INFO"},
            f"vosfx: {result.result['frames']} frames; matte strip "
            f"{matte_strip.name!r} masks {name!r}",
        )
        for text in result.warnings:  # a GPU asked for and absent, a gap in a plate, ...
            self.report({"WARNING"}, f"vosfx: {text}")
        return {"FINISHED"}

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def check(self, context):
        return True

    def _start_modal(self, context):
        try:
            self._scene, self._strip, self._plan_data = self._plan(context)
        except ValueError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        job_path = vosfx_client.write_job(self._plan_data["job"], self._plan_data["job_path"])
        try:
            self._proc = vosfx_client.VosfxProcess(_command(context), job_path).start()
        except vosfx_client.VosfxNotFound as err:
            return self._fail(self._plan_data, err)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.1, window=context.window)
        self._kill_at = None
        _state.update(text="vosfx: starting...", factor=0.0, busy=True)
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type == "ESC" and self._kill_at is None:
            # never block Blender's UI: ask vosfx's group to stop, kill it if it lingers
            self._proc.terminate()
            self._kill_at = time.monotonic() + KILL_AFTER_S
            _state["text"] = "vosfx: cancelling..."
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._kill_at is not None and time.monotonic() > self._kill_at:
            self._proc.kill()
        for ev in self._proc.poll():
            if ev.get("event") == "frame" and self._kill_at is None:
                done, total, _eta = vosfx_client.progress_of(ev)
                if total:
                    _state["factor"] = done / total
                    _state["text"] = f"vosfx {done}/{total} (Esc cancels)"
        _redraw(context)
        if self._proc.running:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        result = self._proc.wait(timeout_s=5.0)  # it has exited: this only reaps it
        _redraw(context)
        return self._finish(context, self._scene, self._strip, self._plan_data, result)

    def cancel(self, context):
        """Blender ends the modal run (a file loaded, Blender quitting): stop vosfx."""
        for proc in (getattr(self, "_proc", None), getattr(self, "_pick", None)):
            if proc is not None:
                proc.cancel(timeout_s=2.0)
        _end(self)

    def draw(self, context):
        for name in ("mask_path", "points", "whole_clip", "output_dir"):
            self.layout.prop(self, name)


class SEQUENCER_OT_vosfx_studio(bpy.types.Operator):
    """Open vosfx studio on the active movie or image-sequence strip at the playhead; Done
    there mattes it"""

    bl_idname = "sequencer.vosfx_studio"
    bl_label = "Pick in vosfx studio"
    bl_options = {"REGISTER"}  # noqa: RUF012 (the Blender idiom)

    whole_clip: BoolProperty(
        name="Whole clip",
        default=False,
        description="Matte every source frame, not only the used range",
    )
    output_dir: StringProperty(
        name="Output folder",
        subtype="DIR_PATH",
        description="Empty: beside the movie file or image folder",
    )

    @classmethod
    def poll(cls, context):
        return SEQUENCER_OT_vosfx_matte.poll(context)

    def execute(self, context):
        """Start the studio; the modal timer waits for Done, then renders as vosfx Matte
        does. Without a window (scripts): block until Done and the render."""
        if _state["busy"]:
            self.report({"ERROR"}, BUSY)
            return {"CANCELLED"}
        scene = sequencer_scene(context)
        strip = scene.sequence_editor.active_strip
        try:
            path, start, end, frame = strip_range(scene, strip, self.whole_clip)
        except ValueError as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        self._scene, self._strip, self._proc, self._picked_by = scene, strip, None, None
        fps = scene_fps(scene) if strip.type == "IMAGE" else None
        pick = vosfx_client.StudioPick(_command(context), path, start, end, frame, fps=fps)
        try:
            self._pick = pick.start()
        except vosfx_client.VosfxNotFound as err:
            self.report({"ERROR"}, str(err))
            return {"CANCELLED"}
        if context.window is None or bpy.app.background:
            self._pick.wait()
            plan = self._picked_plan()
            if plan is None:
                return {"CANCELLED"}
            try:
                result = vosfx_client.run(
                    _command(context), vosfx_client.write_job(plan["job"], plan["job_path"])
                )
            except vosfx_client.VosfxNotFound as err:
                return SEQUENCER_OT_vosfx_matte._fail(self, plan, err)
            return SEQUENCER_OT_vosfx_matte._finish(self, context, scene, strip, plan, result)
        wm = context.window_manager
        self._timer = wm.event_timer_add(0.2, window=context.window)
        self._kill_at = None
        _state.update(
            text="vosfx studio: click the object, then Done (Esc cancels)", factor=0.0, busy=True
        )
        wm.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def _picked_plan(self):
        picked, message = self._pick.picked(), self._pick.message()
        self._picked_by, self._pick = self._pick, None  # its folder goes when the render ends
        if picked is None:
            _end(self)
            self.report({"WARNING"}, message)
            return None
        try:
            return plan_job(
                self._scene,
                self._strip,
                None,
                None,
                self.whole_clip,
                self.output_dir,
                picked=picked,
            )
        except ValueError as err:
            _end(self)
            self.report({"ERROR"}, str(err))
            return None

    def modal(self, context, event):
        if self._pick is None:  # Done was pressed: the render runs as vosfx Matte's
            return SEQUENCER_OT_vosfx_matte.modal(self, context, event)
        if event.type == "ESC":
            self._pick.cancel()
        elif event.type != "TIMER":
            return {"PASS_THROUGH"}
        if self._pick.running:
            return {"RUNNING_MODAL"}
        self._pick.wait()
        plan = self._picked_plan()
        if plan is None:
            context.window_manager.event_timer_remove(self._timer)
            _redraw(context)
            return {"CANCELLED"}
        self._plan_data = plan
        job_path = vosfx_client.write_job(plan["job"], plan["job_path"])
        try:
            self._proc = vosfx_client.VosfxProcess(_command(context), job_path).start()
        except vosfx_client.VosfxNotFound as err:
            context.window_manager.event_timer_remove(self._timer)
            _redraw(context)
            return SEQUENCER_OT_vosfx_matte._fail(self, plan, err)
        _state.update(text="vosfx: starting...", factor=0.0)
        return {"RUNNING_MODAL"}

    def invoke(self, context, event):
        return context.window_manager.invoke_props_dialog(self)

    def cancel(self, context):
        SEQUENCER_OT_vosfx_matte.cancel(self, context)


def _end(op):
    """A render or pick is over (done, failed, cancelled): the status bar is free again and
    the studio pick's folder (the picked job and masks the render read) is removed."""
    _state.update(text="", busy=False)
    pick = getattr(op, "_picked_by", None)
    if pick is not None:
        pick.discard()
        op._picked_by = None


def _menu(self, context):
    self.layout.separator()
    self.layout.operator(SEQUENCER_OT_vosfx_studio.bl_idname, icon="RESTRICT_SELECT_OFF")
    self.layout.operator(SEQUENCER_OT_vosfx_matte.bl_idname, icon="MOD_MASK")


_CLASSES = (VosfxPreferences, SEQUENCER_OT_vosfx_matte, SEQUENCER_OT_vosfx_studio)


@bpy.app.handlers.persistent
def _keep_mattes_on_their_strips(*_args):
    """After any edit and before each frame: a matte strip follows its movie strip (moved in
    the frame or in time, scaled, flipped, reversed), so the cut-out stays on the picture."""
    for scene in bpy.data.scenes:
        try:
            follow_all(scene)
        except ReferenceError:  # a strip removed while this update was under way: the next
            pass  # update sees the sequencer as it is


_HANDLERS = (bpy.app.handlers.depsgraph_update_post, bpy.app.handlers.frame_change_pre)


def register():
    for cls in _CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.SEQUENCER_MT_strip.append(_menu)
    bpy.types.STATUSBAR_HT_header.append(_draw_status)
    for handlers in _HANDLERS:
        handlers.append(_keep_mattes_on_their_strips)


def unregister():
    for handlers in _HANDLERS:
        if _keep_mattes_on_their_strips in handlers:
            handlers.remove(_keep_mattes_on_their_strips)
    bpy.types.STATUSBAR_HT_header.remove(_draw_status)
    bpy.types.SEQUENCER_MT_strip.remove(_menu)
    for cls in reversed(_CLASSES):
        bpy.utils.unregister_class(cls)
