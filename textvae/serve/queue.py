"""The studio's one model and the requests that want it: a bounded queue in front of its lock.

ModelQueue counts every request that wants the model, from its arrival to its answer, and refuses one that would
wait behind MAX_WAITING others with Busy (HTTP 503) at once; a request that has not had its turn after
WAIT_TIMEOUT seconds gets Busy too, so that no request waits without bound.
"""

import threading
from collections.abc import Iterator
from contextlib import contextmanager

# A batched sample request counts as one request, not its group as one call: each holds one of the server's worker
# threads while it waits, and its n adds to its group's decode. Under 20 clients (the load scripts/bench_studio.py
# measures) at most 20 requests wait, plus those whose clients went away; 32 leaves room for those and stays below
# the 40 worker threads FastAPI runs sync endpoints on (anyio's default), so a request to refuse always finds a
# thread to be refused on at once instead of queueing for one.
MAX_WAITING = 32
# A model call takes 0.02-0.3 s on 2 CPU cores (a sample of 100 constrained poems the slowest); under
# scripts/soak_studio.py's 20 clients a request waited 1.5 s at the median and 4 s at p99 there. A request still
# without its turn after 60 s waits behind something stuck or very slow (the first latent map of a large dataset)
# and is better told so than kept hanging.
WAIT_TIMEOUT = 60.0
RETRY_AFTER = 5  # seconds a refused client is told to wait: about the time a full queue of 32 takes to drain


class Busy(Exception):
    """The studio refuses a request for now (HTTP 503): its queue is full, or the model was not free in time."""


class ModelQueue:
    """The lock around every model call, and the requests that want it: at most MAX_WAITING at once, none waiting
    for the lock longer than WAIT_TIMEOUT seconds."""

    def __init__(self):
        self.lock = threading.Lock()
        self.guard = threading.Lock()  # over `waiting` only
        self.waiting = 0  # requests that have arrived and not been answered, the one at the model included

    @contextmanager
    def place(self) -> Iterator[None]:
        """Count this request until it is answered; Busy at once when MAX_WAITING others are ahead of it."""
        with self.guard:
            if self.waiting >= MAX_WAITING:
                raise Busy(f"the studio is busy: {self.waiting} requests are waiting for the model; try again in "
                           f"{RETRY_AFTER} s")
            self.waiting += 1
        try:
            yield
        finally:
            with self.guard:
                self.waiting -= 1

    @contextmanager
    def model(self) -> Iterator[None]:
        """Hold the model lock; Busy when it is not free within WAIT_TIMEOUT seconds."""
        if not self.lock.acquire(timeout=WAIT_TIMEOUT):
            raise Busy(f"the studio is busy: the model was not free within {WAIT_TIMEOUT:g} s; try again in "
                       f"{RETRY_AFTER} s")
        try:
            yield
        finally:
            self.lock.release()

    @contextmanager
    def turn(self) -> Iterator[None]:
        """A place in the queue, then the model lock."""
        with self.place(), self.model():
            yield
