"""The dialog (Fusion UIManager): prompt, options, progress, cancel. The render runs in a
vosfx subprocess; a UI timer polls its events so Resolve stays responsive, and every Resolve
call (through api.py) happens on Resolve's own thread."""

import os
import shutil
import tempfile

import vosfx_client

from vosfx_resolve import api, app

POLL_MS = 100


class Dialog:
    def __init__(self, resolve, fusion, bmd, command):
        self.resolve, self.fusion, self.command = resolve, fusion, command
        self.ui = fusion.UIManager
        self.disp = bmd.UIDispatcher(self.ui)
        self.proc = self.plan = self.ctx = self.options = self.pick = None
        self.job_dir = None
        self.picked_by = None  # the studio pick whose masks the render reads

    def _window(self, title):
        ui = self.ui
        return self.disp.AddWindow(
            {"ID": "vosfxWin", "WindowTitle": "vosfx Matte", "Geometry": [200, 200, 520, 300]},
            ui.VGroup(
                [
                    ui.Label({"ID": "Clip", "Text": title}),
                    ui.Button({"ID": "Studio", "Text": "Pick in vosfx studio..."}),
                    ui.HGroup(
                        [
                            ui.LineEdit(
                                {
                                    "ID": "Mask",
                                    "PlaceholderText": "or a mask image (white = object)",
                                }
                            ),
                            ui.Button({"ID": "Browse", "Text": "Browse..."}),
                        ]
                    ),
                    ui.LineEdit(
                        {
                            "ID": "Points",
                            "PlaceholderText": "or type points on this frame: 420,300 -80,40",
                        }
                    ),
                    ui.CheckBox(
                        {
                            "ID": "Attach",
                            "Checked": True,
                            "Text": "Attach as clip matte (mattes the whole source clip)",
                        }
                    ),
                    ui.CheckBox(
                        {
                            "ID": "Place",
                            "Checked": True,
                            "Text": "Put the alpha clip on the track above",
                        }
                    ),
                    ui.Label({"ID": "Status", "Text": ""}),
                    ui.HGroup(
                        [
                            ui.Button({"ID": "Run", "Text": "Matte"}),
                            ui.Button({"ID": "Cancel", "Text": "Close"}),
                        ]
                    ),
                ]
            ),
        )

    def run(self):
        try:
            self.ctx = api.current_clip(self.resolve)
        except api.ResolveError as err:
            self._message(str(err))
            return
        frame = self.ctx.playhead_source
        frame = frame if frame is not None else self.ctx.source_in
        title = (
            f"{self.ctx.name}  (source frames {self.ctx.source_in}-"
            f"{self.ctx.source_out - 1}; vosfx tracks both ways from frame {frame})"
        )
        self.win = self._window(title)
        self.items = self.win.GetItems()
        self.timer = self.ui.Timer({"ID": "vosfxPoll", "Interval": POLL_MS})
        self.win.On.vosfxWin.Close = self._close_window
        self.win.On.Browse.Clicked = self._browse
        self.win.On.Studio.Clicked = self._studio
        self.win.On.Run.Clicked = self._start
        self.win.On.Cancel.Clicked = self._close
        self.disp.On.vosfxPoll.Timeout = self._tick
        self.win.Show()
        self.disp.RunLoop()
        self.win.Hide()

    def _message(self, text):
        print("vosfx: " + text)  # the Console keeps a copy

    def _status(self, text):
        self.items["Status"].Text = text

    def _browse(self, ev):
        path = self.fusion.RequestFile()
        if path:
            self.items["Mask"].Text = path

    def _studio(self, ev):
        """Open the studio page on the clip's range at the playhead; Done there renders."""
        if self.proc is not None or self.pick is not None:
            return
        try:
            self.options = app.Options(
                attach=bool(self.items["Attach"].Checked), place=bool(self.items["Place"].Checked)
            )
            self.pick = app.pick_in_studio(self.ctx, self.options, self.command)
        except (api.ResolveError, vosfx_client.VosfxNotFound) as err:
            self._status(str(err))
            return
        self.items["Run"].Enabled = self.items["Studio"].Enabled = False
        self.items["Cancel"].Text = "Cancel"
        self._status("click the object in the vosfx studio page, then press Done there")
        self.timer.Start()

    def _start(self, ev):
        if self.proc is not None or self.pick is not None:
            return
        try:
            self.options = app.Options(
                mask_path=self.items["Mask"].Text.strip() or None,
                points=app.parse_points(self.items["Points"].Text),
                attach=bool(self.items["Attach"].Checked),
                place=bool(self.items["Place"].Checked),
            )
        except api.ResolveError as err:
            self._status(str(err))
            return
        self._render()

    def _render(self):
        try:
            self.plan = app.plan_job(self.ctx, self.options)
        except api.ResolveError as err:
            self._status(str(err))
            self._idle()
            return
        self.job_dir = tempfile.mkdtemp(prefix="vosfx_resolve_")
        job_path = vosfx_client.write_job(self.plan.job, os.path.join(self.job_dir, "job.json"))
        try:
            self.proc = vosfx_client.VosfxProcess(self.command, job_path).start()
        except vosfx_client.VosfxNotFound as err:
            self._status(str(err))
            self._idle()
            return
        self.items["Run"].Enabled = self.items["Studio"].Enabled = False
        self.items["Cancel"].Text = "Cancel"
        self._status("starting vosfx (the first run loads the model)...")
        self.timer.Start()

    def _idle(self):
        """Back to waiting for the user: the job file of the last render goes, and the
        folder of the studio pick it rendered."""
        if self.job_dir is not None:
            shutil.rmtree(self.job_dir, ignore_errors=True)
            self.job_dir = None
        if self.picked_by is not None:
            self.picked_by.discard()
            self.picked_by = None
        self.timer.Stop()
        self.items["Run"].Enabled = self.items["Studio"].Enabled = True
        self.items["Cancel"].Text = "Close"

    def _tick_pick(self):
        if self.pick.running:
            return
        self.pick.wait()
        picked, message = self.pick.picked(), self.pick.message()
        self.picked_by, self.pick = self.pick, None
        if picked is None:
            self._idle()
            self._status(message)
            return
        self.options.picked = picked
        self._render()

    def _tick(self, ev):
        if self.pick is not None:
            self._tick_pick()
            return
        for event in self.proc.poll():
            if event.get("event") == "frame":
                self._status(app.progress_text(event))
        if self.proc.running:
            return
        self.timer.Stop()
        result = self.proc.wait()
        self.proc = None
        self._idle()
        if not result.ok:
            self._status(result.message())
            return
        try:
            summary = app.bring_back(self.resolve, self.ctx, self.plan, result, self.options)
        except api.ResolveError as err:
            summary = str(err)
        # what the run said the user must know (a GPU asked for and absent, ...) stays in view
        self._status(summary + "".join(f"; warning: {w}" for w in result.warnings))

    def _close(self, ev):
        if self.pick is not None:  # Cancel while the studio is open: close it
            self.pick.cancel()
            self.pick = None
            self._idle()
            self._status("vosfx studio closed; nothing was rendered")
            return
        if self.proc is not None:  # Cancel while rendering: stop vosfx, keep the dialog
            self.proc.cancel()
            self.proc = None
            self._idle()
            self._status("cancelled; no output was written")
            return
        self.disp.ExitLoop()

    def _close_window(self, ev):
        """The window's close box: closing the dialog cancels a running render."""
        if self.proc is not None or self.pick is not None:
            self._close(ev)
        self.disp.ExitLoop()
