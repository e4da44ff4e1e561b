"""Load shapes. ``Ramp``: step the user count up, hold, and come back down."""
from __future__ import annotations

from locust import LoadTestShape

from loadtest.workload import RAMP_STAGES, stage_at


class Ramp(LoadTestShape):
    """Warm up, double, peak, cool down: see ``workload.RAMP_STAGES``."""

    def tick(self):
        return stage_at(RAMP_STAGES, self.get_run_time())
