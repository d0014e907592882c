"""A stand-in for Fusion's UIManager and bmd.UIDispatcher (tests only): the widgets, timer and
event hooks that plugins/resolve/vosfx_resolve/ui.py uses, with a ``driver`` that plays the
user: ``RunLoop()`` calls ``driver(window, dispatcher)``, which clicks buttons and fires the
timer through the registered handlers."""

from __future__ import annotations


class _Handlers:
    """``On.<ID>.<Event> = fn`` and later ``On.<ID>.<Event>(ev)``."""

    def __init__(self):
        self.__dict__["_ids"] = {}

    def __getattr__(self, name):
        return self._ids.setdefault(name, type("Hooks", (), {})())


class Widget:
    def __init__(self, kind: str, props: dict):
        self.kind, self.ID = kind, props.get("ID")
        self.Text = props.get("Text", "")
        self.Checked = props.get("Checked", False)
        self.Enabled = True


class Timer:
    def __init__(self, props: dict):
        self.ID, self.Interval, self.active = props["ID"], props["Interval"], False

    def Start(self):
        self.active = True

    def Stop(self):
        self.active = False


class UIManager:
    def __init__(self):
        self.widgets: dict[str, Widget] = {}
        self.timers: list[Timer] = []

    def _widget(self, kind, props):
        w = Widget(kind, props)
        if w.ID:
            self.widgets[w.ID] = w
        return w

    def Label(self, props):
        return self._widget("Label", props)

    def LineEdit(self, props):
        return self._widget("LineEdit", props)

    def Button(self, props):
        return self._widget("Button", props)

    def CheckBox(self, props):
        return self._widget("CheckBox", props)

    def VGroup(self, children):
        return list(children)

    def HGroup(self, children):
        return list(children)

    def Timer(self, props):
        t = Timer(props)
        self.timers.append(t)
        return t


class Window:
    def __init__(self, ui: UIManager, props: dict):
        self.ui, self.props, self.On, self.shown = ui, props, _Handlers(), False

    def GetItems(self):
        return self.ui.widgets

    def Show(self):
        self.shown = True

    def Hide(self):
        self.shown = False


class UIDispatcher:
    def __init__(self, ui: UIManager, driver):
        self.ui, self.driver, self.On, self.window, self.exited = (
            ui,
            driver,
            _Handlers(),
            None,
            False,
        )

    def AddWindow(self, props, layout):
        self.window = Window(self.ui, props)
        return self.window

    def RunLoop(self):
        self.driver(self.window, self)

    def ExitLoop(self):
        self.exited = True


class Fusion:
    def __init__(self, driver, picked_file=None):
        self.UIManager = UIManager()
        self._driver, self._picked = driver, picked_file

    def RequestFile(self):
        return self._picked


class Bmd:
    def __init__(self, fusion: Fusion):
        self.fusion = fusion

    def UIDispatcher(self, ui):
        return UIDispatcher(ui, self.fusion._driver)
