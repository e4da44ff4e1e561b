"""``[host]`` ``gc_*``: the collector settings each serving process applies once at start-up
(``resolver.gc_settings``, called by ``topology.host`` and ``idsim node``)."""
from __future__ import annotations

import gc

import pytest

from resolver import config as configuration
from resolver import gc_settings


@pytest.fixture
def restore_gc():
    before = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*before)


def test_thresholds_and_freeze_come_from_config(restore_gc):
    config = configuration.layered([("--set", configuration.parse_set(
        ["host.gc_threshold0=12345", "host.gc_threshold1=7", "host.gc_threshold2=3"]))])
    gc.unfreeze()
    kept = [object() for _ in range(10)]
    gc_settings.apply(config.host)
    assert gc.get_threshold() == (12345, 7, 3)
    assert gc.get_freeze_count() >= len(kept)


def test_the_defaults_freeze_and_raise_the_young_threshold(restore_gc):
    gc.unfreeze()
    gc_settings.apply(configuration.Config().host)
    assert gc.get_threshold() == (50_000, 20, 100)
    assert gc.get_freeze_count() > 0


def test_freeze_and_thresholds_can_be_left_alone(restore_gc):
    gc.unfreeze()
    gc.set_threshold(700, 10, 10)
    config = configuration.layered([("--set", configuration.parse_set(
        ["host.gc_freeze=0", "host.gc_threshold0=0"]))])
    gc_settings.apply(config.host)
    assert gc.get_threshold() == (700, 10, 10)
    assert gc.get_freeze_count() == 0
