import threading
import time

import pytest

from vosfx.io.writers.background import BackgroundCalls


def test_calls_run_in_order_on_another_thread():
    seen, threads = [], set()

    def fn(i):
        seen.append(i)
        threads.add(threading.current_thread().name)

    with BackgroundCalls(fn) as bg:
        for i in range(50):
            bg.put(i)
    assert seen == list(range(50))
    assert threads == {"vosfx-writer"}


def test_error_reraises_in_the_caller_and_later_calls_are_dropped():
    seen = []

    def fn(i):
        if i == 3:
            raise OSError(28, "No space left on device")
        seen.append(i)

    bg = BackgroundCalls(fn, depth=1)
    with pytest.raises(OSError, match="No space"):
        for i in range(100):
            bg.put(i)
        bg.close()
    bg.abort()
    assert seen == [0, 1, 2]


def test_abort_does_not_wait_for_queued_calls():
    seen = []
    gate = threading.Event()

    def fn(i):
        gate.wait(5)
        seen.append(i)

    bg = BackgroundCalls(fn, depth=8)
    for i in range(5):
        bg.put(i)
    gate.set()
    bg.abort()
    assert len(seen) <= 1  # at most the call already running finished


def test_queue_is_bounded():
    release = threading.Event()
    bg = BackgroundCalls(lambda i: release.wait(5), depth=2)
    t0 = time.perf_counter()
    threading.Timer(0.3, release.set).start()
    for i in range(4):  # 1 running + 2 queued fit; the 4th waits for the release
        bg.put(i)
    assert time.perf_counter() - t0 >= 0.25
    bg.close()
