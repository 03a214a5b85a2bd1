"""The threads of one point: started together, the first failure kept, drained on Ctrl-C.

Closed loop (benchlib.measure.load: client threads) and open loop
(benchlib.measure.serving: server workers and the arrival generator) run their threads
through one protocol::

    crew = Crew(wake)                 # wake(): rouse threads asleep on a condition
    crew.add(name, body) ...          # each body runs in its own daemon thread:
                                      #   BrokenBarrierError -> another thread failed first
                                      #   (it holds the reason); any other exception -> crew.fail
    crew.run(coordinate)              # start every thread, then coordinate() in this thread
                                      # (default: wait for every thread to end)
        Ctrl-C here: stop, abort the barriers, wake, wait for every started thread,
        re-raise                      # torch ops still running in threads at exit abort the
                                      # process and lose the clean exit
    crew.failed_run()                 # out of memory -> a PointRun `oom` without records (a
                                      # partial window would mislead); another failure is raised

`crew.fail(exc)` keeps the first failure, sets `stop`, aborts the barriers and wakes the
rest. Threads wait on their own `finished` events, not `Thread.join`: a join interrupted
once returns at once ever after on CPython < 3.13.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from benchlib.measure.memory import first_line, is_out_of_memory
from benchlib.measure.records import PointRun
from benchlib.vocabulary import STATUS_OOM


class Crew:
    def __init__(self, wake: Callable[[], None] = lambda: None) -> None:
        self.stop = threading.Event()
        self.failure: BaseException | None = None
        self._wake = wake
        self._lock = threading.Lock()
        self._barriers: list[threading.Barrier] = []
        self._threads: list[tuple[threading.Thread, threading.Event]] = []

    def barrier(self, parties: int, action: Callable[[], None] | None = None) -> threading.Barrier:
        """A barrier that a failure or Ctrl-C breaks, so no thread waits on it forever."""
        barrier = threading.Barrier(parties, action=action)
        self._barriers.append(barrier)
        return barrier

    def fail(self, exc: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = exc
        self._halt()

    def _halt(self) -> None:
        self.stop.set()
        for barrier in self._barriers:
            barrier.abort()
        self._wake()

    def add(self, name: str, body: Callable[[], None]) -> threading.Event:
        """A thread that runs `body`; the event it sets when it ends."""
        finished = threading.Event()

        def run() -> None:
            try:
                body()
            except threading.BrokenBarrierError:
                pass  # another thread failed before the window started; it holds the reason
            except BaseException as exc:  # noqa: BLE001 - handed to the coordinating thread
                self.fail(exc)
            finally:
                finished.set()

        self._threads.append((threading.Thread(target=run, name=name, daemon=True), finished))
        return finished

    def run(self, coordinate: Callable[[], None] | None = None) -> None:
        """Start every thread, then `coordinate()` (default: wait for them all); on Ctrl-C drain them."""
        try:
            for thread, _ in self._threads:
                thread.start()
            (coordinate or self.wait)()
        except KeyboardInterrupt:
            self._halt()
            self.wait()
            raise

    def wait(self) -> None:
        """Until every started thread has ended."""
        for thread, finished in self._threads:
            if thread.ident is not None:
                finished.wait()

    def failed_run(self) -> PointRun | None:
        """None when no thread failed; the point's `oom` run when one ran out of memory; else raises."""
        if self.failure is None:
            return None
        if is_out_of_memory(self.failure):
            return PointRun(records=[], status=STATUS_OOM, error=first_line(self.failure))
        raise self.failure
