"""Unseeded sample requests that arrive together, decoded as one `generate.sample` call.

Requests with the same settings apart from n (the same key) form a group; the first is its leader. The leader takes
the model lock (textvae.serve.queue), closes the group once it holds it (under load after a short wait for company:
see SampleBatcher), decodes the members' n summed in one call and hands each member its own slice. Arrivals while a
batch decodes join the next group, whose leader waits on the lock, so under load whatever came in during one batch
decodes in the next. An unseeded poem is drawn independently of the others in its call, so a slice of a larger call
is distributed as a call of its own; a seeded request has no such freedom (its poems must equal those it gives
alone) and never comes here.
"""

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from textvae.serve.queue import ModelQueue

# Under load, clients resend as soon as they are answered. Without a wait, the next batch would start with whoever
# came back first (often a lone request that queued during the last batch) and the others would form a second
# batch behind it: alternating batches, each request waiting for two decodes. So a leader under load waits until
# its group has as many requests as the last batch served, or GATHER seconds at most: answering 20 requests and
# reading their next ones took 10-20 ms of the studio's time on 2 CPU cores, beside ~125 ms to decode 100 poems.
GATHER = 0.030
BUSY = 0.05  # a batch of several requests that finished this recently (in seconds) means the studio is under load


@dataclass(eq=False)
class _Group:
    """One pending or running batch: the members' n summed, and what the leader leaves for them."""
    total: int = 0
    members: int = 0
    done: threading.Event = field(default_factory=threading.Event)
    poems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    error: BaseException | None = None


class SampleBatcher:
    """Groups unseeded sample requests by their settings and decodes each group in one call with the model lock
    of `queue` held.

    The gather rule: once it holds the lock, and before it closes its group, a leader whose last batch served
    several requests and finished less than BUSY seconds ago waits for company (`_gather`), so that the clients
    it just answered join this batch; a lone request on an idle studio, or one client sending request after
    request, starts at once. `clock` is a parameter so that a test can drive the rule without timing anything.
    A member waits for its leader, which waits for the lock WAIT_TIMEOUT seconds at most: a leader refused the
    lock closes its group and every member answers with the leader's Busy.
    """

    def __init__(self, queue: ModelQueue, clock: Callable[[], float] = time.monotonic):
        self.queue, self.clock = queue, clock
        self.guard = threading.Lock()  # over `pending` only: never held while decoding
        self.joined = threading.Condition(self.guard)  # notified whenever a request joins a group
        self.pending: dict[Hashable, _Group] = {}  # key -> the group that has not started yet
        self.finished = float("-inf")  # when (by clock) the last batch finished
        self.served = 0  # how many requests the last batch served

    def sample(self, key: Hashable, n: int, decode: Callable[[int], tuple[list[str], list[str]]]
               ) -> tuple[list[str], list[str]]:
        """(this request's n poems, the warnings of its batch). `decode(total)` gives (poems, warnings) for
        total poems; the leader calls it under the lock, with every member's settings being its own."""
        with self.guard:
            group = self.pending.get(key)
            leader = group is None
            if leader:
                group = self.pending[key] = _Group()
            start, group.total, group.members = group.total, group.total + n, group.members + 1
            self.joined.notify_all()
        if leader:
            self._lead(key, group, decode)
        else:
            group.done.wait()
        if group.error is not None:
            raise group.error
        return group.poems[start:start + n], group.warnings

    def _lead(self, key: Hashable, group: _Group, decode: Callable[[int], tuple[list[str], list[str]]]) -> None:
        try:
            with self.queue.model():
                if self.served > 1 and self.clock() - self.finished < BUSY:
                    self._gather(group)
                self._close(key, group)  # later arrivals start the next group
                try:
                    group.poems, group.warnings = decode(group.total)
                finally:
                    self.finished, self.served = self.clock(), group.members
        except BaseException as error:  # Busy or the decode's error: every member must wake and answer with it
            group.error = error
        finally:
            self._close(key, group)  # a leader refused the lock: no later request may join a group none will lead
            group.done.set()

    def _close(self, key: Hashable, group: _Group) -> None:
        with self.guard:
            if self.pending.get(key) is group:
                del self.pending[key]

    def _gather(self, group: _Group) -> bool:
        """Wait until the group has as many requests as the last batch served, GATHER seconds at most; whether
        it has them."""
        with self.joined:
            return self.joined.wait_for(lambda: group.members >= self.served, timeout=GATHER)
