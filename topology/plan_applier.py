"""The fault plan's applier for a running cluster: ``topology.fault_control`` behind the
``faultplan.Applier`` protocol (``apply(spec)``, ``clear(node)``).

``topology.fault_control`` (the ``idsim fault`` client) is imported when first used, so this
module, ``idsim fault run`` and ``idsim load --faults`` import without it; when it is missing
``ClusterApplier`` raises ``FaultsUnavailable`` with one line saying so.
"""
from __future__ import annotations

import importlib
from pathlib import Path


class FaultsUnavailable(RuntimeError):
    """This build has no ``topology.fault_control`` (``idsim fault``)."""


def fault_control():
    try:
        return importlib.import_module("topology.fault_control")
    except ImportError as exc:
        raise FaultsUnavailable(f"faults cannot be set in this build (no "
                                f"topology.fault_control: {exc})") from None


class ClusterApplier:
    """Applies and clears faults on the cluster running from ``data_dir``."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = str(data_dir)
        self.control = fault_control()

    def apply(self, spec: dict):
        return self.control.apply(self.data_dir, spec)

    def clear(self, node: str):
        return self.control.clear(self.data_dir, node)
