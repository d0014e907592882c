import threading
import time

import pytest

from vosfx.io.writers.background import BackgroundCalls
from vosfx.io.writers.parallel import ParallelCalls


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


# ParallelCalls: one BackgroundCalls per writer of a multi-output job (vosfx/io/writers/parallel.py)


def test_parallel_calls_each_function_sees_every_call_in_order_on_its_own_thread():
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    threads: dict[int, set[str]] = {0: set(), 1: set(), 2: set()}

    def make(k):
        def fn(i):
            seen[k].append(i)
            threads[k].add(threading.current_thread().name)

        return fn

    with ParallelCalls([make(k) for k in range(3)], depth=2) as calls:
        for i in range(40):
            calls.put(i)
    assert all(s == list(range(40)) for s in seen.values())
    names = [t.pop() for t in threads.values()]
    assert sorted(names) == ["vosfx-writer-0", "vosfx-writer-1", "vosfx-writer-2"]


def test_parallel_calls_overlap():
    # 2 writers x 5 calls x 0.1 s: 1.0 s one after the other, ~0.5 s side by side
    t0 = time.perf_counter()
    with ParallelCalls([lambda i: time.sleep(0.1)] * 2, depth=8) as calls:
        for i in range(5):
            calls.put(i)
    assert time.perf_counter() - t0 < 0.85


@pytest.mark.parametrize("when", ["put", "close"])
def test_parallel_calls_an_error_stops_every_thread(when):
    gate = threading.Event()
    slow_seen = []

    def failing(i):
        if i == 2:
            raise OSError(28, "No space left on device")

    def slow(i):
        gate.wait(5)
        slow_seen.append(i)

    calls = ParallelCalls([failing, slow], depth=16)
    with pytest.raises(OSError, match="No space"):
        for i in range(10 if when == "close" else 10_000):
            calls.put(i)
            if i == 3:
                time.sleep(0.2)  # the failing thread reaches call 2 meanwhile
                gate.set()
        calls.close()
    calls.abort()
    assert len(slow_seen) < 10  # the other writer did not run all of its queue


def test_parallel_calls_exceptional_exit_does_not_wait():
    gate = threading.Event()
    seen = []

    def fn(i):
        gate.wait(5)
        seen.append(i)

    with pytest.raises(KeyboardInterrupt), ParallelCalls([fn, fn], depth=8) as calls:
        for i in range(5):
            calls.put(i)
        threading.Timer(0.2, gate.set).start()  # released while the exit is stopping them
        raise KeyboardInterrupt
    assert len(seen) <= 2  # at most the call each thread had running
