"""Request-path metrics that cost a dictionary update, exported in Prometheus's format.

prometheus_client's own metric objects take a lock and walk label dictionaries on every
observation (a few microseconds each, several per request). Here a counter is a dict from
a label tuple to a number and a histogram adds a bisect; the families are built only when
``/metrics`` is scraped, through a prometheus_client collector, so the exposition format
is still the library's.
"""

from __future__ import annotations

import bisect
from typing import Callable, Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import CollectorRegistry

__all__ = ["Counter", "Histogram", "Gauge", "MetricSet", "LATENCY_BUCKETS", "DELTA_BUCKETS", "DIFF_BUCKETS"]

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Shadow minus primary latency: negative when the shadow was faster.
DELTA_BUCKETS = tuple(-b for b in reversed(LATENCY_BUCKETS)) + (0.0,) + LATENCY_BUCKETS
DIFF_BUCKETS = (1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.25, 0.5, 1.0, 10.0, 100.0)


class Counter:
    __slots__ = ("name", "doc", "labels", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...]) -> None:
        self.name, self.doc, self.labels = name, doc, labels
        self.values: dict[tuple, float] = {}

    def inc(self, key: tuple, amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def family(self) -> CounterMetricFamily:
        family = CounterMetricFamily(self.name.removesuffix("_total"), self.doc, labels=self.labels)
        for key, value in self.values.items():
            family.add_metric(key, value)
        return family


class Histogram:
    __slots__ = ("name", "doc", "labels", "bounds", "values")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(bounds):
            raise ValueError(f"{name}: bucket bounds must be sorted")
        self.name, self.doc, self.labels, self.bounds = name, doc, labels, bounds
        self.values: dict[tuple, list] = {}  # key -> [count per bucket (+Inf last)..., sum]

    def observe(self, key: tuple, value: float) -> None:
        row = self.values.get(key)
        if row is None:
            row = self.values[key] = [0] * (len(self.bounds) + 1) + [0.0]
        row[bisect.bisect_left(self.bounds, value)] += 1
        row[-1] += value

    def family(self) -> HistogramMetricFamily:
        family = HistogramMetricFamily(self.name, self.doc, labels=self.labels)
        for key, row in self.values.items():
            buckets, running = [], 0
            for bound, count in zip(self.bounds + (float("inf"),), row[:-1]):
                running += count
                buckets.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
            family.add_metric(key, buckets, row[-1])
        return family


class Gauge:
    """Read when scraped: ``read`` returns (label tuple, value) pairs."""

    __slots__ = ("name", "doc", "labels", "read")

    def __init__(self, name: str, doc: str, labels: tuple[str, ...], read: Callable[[], Iterable[tuple[tuple, float]]]) -> None:
        self.name, self.doc, self.labels, self.read = name, doc, labels, read

    def family(self) -> GaugeMetricFamily:
        family = GaugeMetricFamily(self.name, self.doc, labels=self.labels)
        for key, value in self.read():
            family.add_metric(key, value)
        return family


class MetricSet:
    """The metrics of one process, exported through a fresh prometheus_client registry."""

    def __init__(self) -> None:
        self._metrics: list = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def add(self, metric):
        self._metrics.append(metric)
        return metric

    def counter(self, name: str, doc: str, labels: tuple[str, ...]) -> Counter:
        return self.add(Counter(name, doc, labels))

    def histogram(self, name: str, doc: str, labels: tuple[str, ...], bounds: tuple[float, ...] = LATENCY_BUCKETS) -> Histogram:
        return self.add(Histogram(name, doc, labels, bounds))

    def gauge(self, name: str, doc: str, labels: tuple[str, ...], read) -> Gauge:
        return self.add(Gauge(name, doc, labels, read))

    def collect(self):
        for metric in self._metrics:
            yield metric.family()

    def exposition(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)
