"""Failed-login limits: how many wrong secrets a client may send before it must wait. Pure.

Two limits, each a fixed window of failures followed by a lockout (``AuthConfig``):

- per client address: ``address_failures`` failed logins within ``window`` seconds lock the
  address out for ``lockout`` seconds, whatever identity it then names;
- per (identity, address): ``identity_failures`` failed logins of one identity from one
  address lock that pair out, and a correct secret is refused too until the lockout ends.

Counting by address, never by identity alone, is what keeps the owner of a prefix able to log
in from their own address while someone else fails at it from another (the cost of guessing
from many addresses is the secret's hash: scrypt, or 144 random bits). A success forgets the
pair's failures and makes the pair known for ``known_for`` seconds: a known pair is not held
by its address's lockout (only by its own), so clients that share an address with a guesser
(behind one proxy, or writing through a recursive node) and have logged in before keep
working. A limit of 0 turns that limit off.

Processes that serve one port (``SO_REUSEPORT``) each keep their own counts, and a client's
connections are spread over them: ``per_process(config, n)`` is the share of each limit one
of ``n`` such processes allows, so that together they allow about the limit (at most ``n - 1``
more: the shares are rounded up, never to 0, which would turn a limit off). ``idsim up`` and
``idsim node --processes`` start every process of a node with its share.

Invariants: memory is bounded: at most ``tracked`` buckets (addresses and pairs together) are
held, the least recently touched going first (an address that has churned out of the LRU
starts again from zero: the bound on memory wins over the memory of old failures); time only
from the ``clock`` given; no I/O. The caller (``resolver.http_input.identity_of``) asks
``check`` before verifying a secret and reports the outcome with ``failed``/``succeeded``.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Hashable

from resolver import errors
from resolver.clock import Clock
from resolver.config import AuthConfig

TOO_MANY = 429


class RateLimited(errors.HandleError):
    """Too many failed logins: HTTP 429 with ``Retry-After: retry_after`` (whole seconds),
    responseCode 3 (Handle's RC_SERVER_TOO_BUSY: come back later)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(errors.SERVER_TOO_BUSY, message, status=TOO_MANY)
        self.retry_after = retry_after

    def __reduce__(self):
        return (RateLimited, (self.message, self.retry_after))


def per_process(config: AuthConfig, processes: int) -> dict[str, int]:
    """The ``[auth]`` limits each of ``processes`` processes sharing one port allows (a limit
    of 0, off, stays off): ``config`` values to layer on top."""
    n = max(1, processes)
    return {name: -(-getattr(config, name) // n)  # ceiling division: 1 stays 1
            for name in ("address_failures", "identity_failures")}


class _Bucket:
    __slots__ = ("start", "count", "until", "known")

    def __init__(self, start: float) -> None:
        self.start = start   # when the current window of failures began
        self.count = 0       # failures in it
        self.until = 0.0     # locked out before this time
        self.known = 0.0     # (a pair) logged in successfully; exempt from its address's lock


class LoginLimits:
    """The two limits above over an LRU of at most ``config.tracked`` buckets."""

    def __init__(self, config: AuthConfig, clock: Clock) -> None:
        self.config = config
        self.clock = clock
        self._buckets: OrderedDict[Hashable, _Bucket] = OrderedDict()

    def _keys(self, identity: object, address: str) -> list[tuple[Hashable, int]]:
        c = self.config
        keys: list[tuple[Hashable, int]] = []
        if c.address_failures:
            keys.append((address, c.address_failures))
        if c.identity_failures and identity is not None:
            keys.append(((identity, address), c.identity_failures))
        return keys

    def check(self, identity: object, address: str) -> None:
        """None when this identity may try to log in from ``address`` now; RateLimited if not."""
        now = self.clock()
        wait = 0.0
        buckets = self._buckets
        pair = buckets.get((identity, address))
        known = pair is not None and now < pair.known
        for key, _ in self._keys(identity, address):
            bucket = buckets.get(key)
            if bucket is not None and now < bucket.until and not (known and key == address):
                wait = max(wait, bucket.until - now)
        if wait:
            raise RateLimited("too many failed logins from this address; try again in "
                              f"{math.ceil(wait)} s", max(1, math.ceil(wait)))

    def failed(self, identity: object, address: str) -> None:
        """Count one failed login (``identity`` None: credentials that named none)."""
        now = self.clock()
        c = self.config
        for key, allowed in self._keys(identity, address):
            bucket = self._touch(key, now)
            if now >= bucket.start + c.window:
                bucket.start, bucket.count = now, 0
            bucket.count += 1
            if bucket.count >= allowed:  # locked; counting starts again after the lockout
                bucket.until = now + c.lockout
                bucket.start, bucket.count = bucket.until, 0

    def succeeded(self, identity: object, address: str) -> None:
        """A correct secret: the pair's failures are forgotten (the address's are not) and the
        pair is known for ``known_for`` seconds."""
        if not self.config.known_for:
            self._buckets.pop((identity, address), None)
            return
        now = self.clock()
        bucket = self._touch((identity, address), now)
        bucket.start, bucket.count, bucket.known = now, 0, now + self.config.known_for

    def _touch(self, key: Hashable, now: float) -> _Bucket:
        buckets = self._buckets
        bucket = buckets.get(key)
        if bucket is None:
            bucket = buckets[key] = _Bucket(now)
            while len(buckets) > self.config.tracked:
                buckets.popitem(last=False)
        else:
            buckets.move_to_end(key)
        return bucket

    def __len__(self) -> int:
        """Buckets held (addresses and pairs)."""
        return len(self._buckets)
