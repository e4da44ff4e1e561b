"""Load shapes. ``Ramp``: step the user count up, hold, and come back down."""
from __future__ import annotations

from locust import LoadTestShape


class Ramp(LoadTestShape):
    """(seconds from start, users, spawn rate) stages: warm up, double, peak, cool down."""

    stages = [(10, 10, 10), (25, 25, 10), (45, 50, 10), (55, 10, 20)]

    def tick(self):
        t = self.get_run_time()
        for until, users, rate in self.stages:
            if t < until:
                return users, rate
        return None
