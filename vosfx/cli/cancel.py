"""`vosfx matte`'s run of its job: on a worker thread, so Ctrl-C, SIGTERM and SIGHUP cancel it
cleanly and at once."""

from __future__ import annotations

import click

from vosfx.signals import on_terminate


def run_interruptible(job, on_progress):
    """Run the job on a worker thread; SIGTERM (a host closing its dialog), SIGHUP (the
    terminal closed) and Ctrl-C cancel it cleanly: the writers remove their temporary files and nothing that looks finished is
    left. The main thread only waits, so it answers a signal at once (a model call on the
    worker can take seconds) and says so; a second Ctrl-C quits without waiting."""
    import os
    import threading
    import time

    from vosfx import pipeline
    from vosfx.errors import Cancelled

    if not _main_thread():  # no signals to answer off the main thread (tests, embedders)
        return pipeline.run(job, on_progress=on_progress)

    cancel, done = threading.Event(), threading.Event()
    outcome: dict = {}

    def work() -> None:
        try:
            outcome["report"] = pipeline.run(job, on_progress=on_progress, cancel=cancel)
        except BaseException as err:  # noqa: BLE001 - handed to the main thread, re-raised
            outcome["error"] = err
        finally:
            done.set()

    def _term(signum, frame):
        raise KeyboardInterrupt

    worker = threading.Thread(target=work, name="vosfx-matte", daemon=True)
    with on_terminate(_term):
        worker.start()
        # polled with sleep, not Thread.join(timeout): a KeyboardInterrupt inside join() can
        # mark a running thread as finished (CPython's bpo-45274 handling)
        while not done.is_set():
            try:
                time.sleep(0.05)
            except KeyboardInterrupt:
                if cancel.is_set():
                    _say(
                        "vosfx: quitting now; temporary files may be left beside the outputs "
                        "(the next render of them removes them)"
                    )
                    os._exit(Cancelled.exit_code)
                cancel.set()
                _say(
                    "vosfx: cancelling: stopping after the frame in progress and "
                    "removing partial outputs (Ctrl-C again to quit at once)"
                )
    worker.join()
    if "error" in outcome:
        if isinstance(outcome["error"], KeyboardInterrupt):
            raise Cancelled("cancelled; partial outputs were removed") from None
        raise outcome["error"]
    return outcome["report"]  # finished before the cancel was seen: the outputs are whole


def _say(message: str) -> None:
    """On stderr, unless it is gone (SIGHUP: the terminal closed): the cancel goes on."""
    try:
        click.echo(message, err=True)
    except OSError:
        pass


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
