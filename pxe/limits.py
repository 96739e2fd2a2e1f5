"""Small bounds shared by the boot services: a per-client rate and a rate-limited log.

Both are bounded in memory whatever the network sends: the rate table keeps at
most ``max_clients`` addresses (idle ones are forgotten first), and the log
keeps one counter per kind of line.
"""

import threading
import time


class RateLimiter:
    """A token bucket per key (a client address): ``burst`` at once, then ``rate`` per second.

    ``allow(key)`` takes one token and says whether there was one.  At most
    ``max_clients`` keys are tracked; when the table is full, keys whose bucket
    has refilled (nothing to remember) are dropped, and if none has, the table
    is cleared: a flood of addresses can make the limiter forget, never grow.
    """

    def __init__(self, burst, rate, max_clients=4096, clock=time.monotonic):
        self.burst = float(burst)
        self.rate = float(rate)
        self.max_clients = max_clients
        self._clock = clock
        self._buckets = {}           # key -> (tokens, time of the reading)
        self._lock = threading.Lock()

    def allow(self, key):
        now = self._clock()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * self.rate)
            ok = tokens >= 1.0
            if ok:
                tokens -= 1.0
            if key not in self._buckets and len(self._buckets) >= self.max_clients:
                self._forget(now)
            self._buckets[key] = (tokens, now)
            return ok

    def _forget(self, now):
        full = [k for k, (t, then) in self._buckets.items()
                if t + (now - then) * self.rate >= self.burst]
        for k in full:
            del self._buckets[k]
        if len(self._buckets) >= self.max_clients:
            self._buckets.clear()


class LogLimiter:
    """At most ``burst`` lines of one kind at once, then one per ``interval`` seconds.

    ``log(kind, level, fmt, *args)`` writes the line or counts it as
    suppressed; the next line of that kind that goes out says how many were
    left out.  What the network sends can no longer decide how much is logged.
    """

    def __init__(self, logger, burst=20, interval=1.0, clock=time.monotonic):
        self.logger = logger
        self._bucket = RateLimiter(burst, 1.0 / interval, max_clients=256, clock=clock)
        self._suppressed = {}
        self._lock = threading.Lock()

    def log(self, kind, level, fmt, *args):
        if not self._bucket.allow(kind):
            with self._lock:
                self._suppressed[kind] = self._suppressed.get(kind, 0) + 1
            return False
        with self._lock:
            left_out = self._suppressed.pop(kind, 0)
        if left_out:
            fmt += " (and %d similar lines left out)"
            args += (left_out,)
        self.logger.log(level, fmt, *args)
        return True

    def suppressed(self):
        with self._lock:
            return sum(self._suppressed.values())
