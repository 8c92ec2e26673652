"""One counter scheme for every corpus (Beam's namespaced counters, summed in metrics.json)."""

from __future__ import annotations

from apache_beam.metrics import Metrics

NS = "mmcurate"


def count(name: str, n: int = 1) -> None:
    """`{kind}.{status}.{reason}`, `{kind}.input`, `units.*`."""
    Metrics.counter(NS, name).inc(n)
