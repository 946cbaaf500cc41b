"""Prometheus metrics (iclsel_*): API request durations, plus what workers recorded (workers/metrics_store.py)."""

from __future__ import annotations

import logging
from collections import defaultdict

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.utils import floatToGoString

from iclsel.workers.jobs import STATUSES
from iclsel.workers.metrics_store import ALWAYS_PHASES, PASS_KINDS, PHASE_BUCKETS

log = logging.getLogger(__name__)

# Series whose label values are known in advance are exported at 0 before their first count, so that
# rate() sees the first increase (a series that appears with its first count has no rate yet).
COUNTERS = {  # stored name -> (help, label names, label values known in advance)
    "jobs_total": ("jobs that reached each status", ("status",), STATUSES),
    "cache_hits_total": ("tensor cache hits: anchors, exact runs, prompt scores, embeddings", (), ()),
    "cache_misses_total": ("tensor cache misses: anchors, exact runs, prompt scores, embeddings", (), ()),
    "model_passes_total": ("model passes (rows) by kind", ("kind",), PASS_KINDS),
    "anchor_tasks_total": ("anchor query chunks computed, by worker (Redis mode)", ("worker",), ()),
}


class JobCollector:
    """Reads the backend's metric store (memory or Redis) and queue state at scrape time."""

    def __init__(self, backend):
        self.backend = backend

    def collect(self):
        try:
            snapshot, depth, workers = self.backend.metrics.snapshot(), self.backend.depth(), self.backend.live_workers()
        except Exception as error:  # Redis down: export what this process knows (request metrics)
            log.warning("metrics store unavailable: %s", error)
            return
        by_name = defaultdict(list)
        for (name, labels), value in snapshot.items():
            by_name[name].append((dict(labels), value))

        for name, (help_text, label_names, known) in COUNTERS.items():
            family = CounterMetricFamily(f"iclsel_{name}", help_text, labels=label_names)
            counted = {tuple(labels[label] for label in label_names): value for labels, value in by_name[name]}
            for values in [()] if not label_names else [(value,) for value in known]:
                counted.setdefault(values, 0)
            for values, value in counted.items():
                family.add_metric(list(values), value)
            yield family

        histogram = HistogramMetricFamily("iclsel_phase_duration_seconds", "seconds per job phase", labels=["phase"])
        buckets = {(labels["phase"], labels["le"]): value for labels, value in by_name["phase_duration_seconds_bucket"]}
        sums = {labels["phase"]: value for labels, value in by_name["phase_duration_seconds_sum"]}
        for phase in sorted(set(sums) | set(ALWAYS_PHASES)):
            histogram.add_metric([phase], [(floatToGoString(bound), buckets.get((phase, str(bound)), 0))
                                           for bound in PHASE_BUCKETS], sums.get(phase, 0))
        yield histogram

        errors = GaugeMetricFamily("iclsel_estimate_error", "estimate-error diagnostics of the last job that had them",
                                   labels=["measure"])
        for labels, value in by_name["estimate_error"]:
            errors.add_metric([labels["measure"]], value)
        yield errors
        yield GaugeMetricFamily("iclsel_queue_depth", "jobs queued or running", value=depth)
        yield GaugeMetricFamily("iclsel_workers", "live workers with a model loaded", value=workers)


class ServiceMetrics:
    def __init__(self, backend):
        self.registry = CollectorRegistry()
        self.requests = Histogram("iclsel_request_duration_seconds", "HTTP request duration",
                                  ["method", "route", "status"], registry=self.registry)
        self.waiting = Gauge("iclsel_waiting_requests", "requests waiting for a job to finish (wait_s)",
                             registry=self.registry)
        self.registry.register(JobCollector(backend))

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
