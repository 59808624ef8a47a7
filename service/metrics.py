"""/metrics: Prometheus metrics read from the store at each scrape, so any process that
shares the store can serve them (papers, subscribers, deliveries by state, job runs)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from . import store
from .cycle import App


class StoreCollector:
    """Prometheus metrics read from the store when scraped (so any process can serve them)."""

    def __init__(self, current: Callable[[], App]) -> None:
        self.current = current

    def collect(self) -> Iterator[Metric]:
        app = self.current()
        with store.reading(app.engine) as session:
            counts = store.counts(session=session)
            runs = store.run_stats(session=session)
            last = store.last_run(session=session)
        yield GaugeMetricFamily("paperboy_papers", "Papers in the store", value=counts["papers"])
        yield GaugeMetricFamily(
            "paperboy_papers_unmatched", "Papers not matched yet", value=counts["unmatched_papers"]
        )
        subs = GaugeMetricFamily("paperboy_subscribers", "Subscribers in the configuration", labels=["state"])
        subs.add_metric(["receiving"], counts["subscribers"] - counts["unsubscribed"])
        subs.add_metric(["unsubscribed"], counts["unsubscribed"])
        yield subs
        deliveries = GaugeMetricFamily("paperboy_deliveries", "Deliveries by state", labels=["state"])
        for state, n in sorted(counts["deliveries"].items()):
            deliveries.add_metric([state], n)
        yield deliveries
        seconds = CounterMetricFamily(
            "paperboy_job_seconds", "Time spent in job runs (the runs kept)", labels=["job"]
        )
        total = CounterMetricFamily("paperboy_job_runs", "Job runs (the runs kept)", labels=["job"])
        failed = CounterMetricFamily("paperboy_job_failures", "Job runs that failed", labels=["job"])
        for job, n, secs, bad in runs:
            seconds.add_metric([job], secs)
            total.add_metric([job], n)
            failed.add_metric([job], bad)
        yield from (seconds, total, failed)
        if last is not None:
            yield GaugeMetricFamily(
                "paperboy_last_run_timestamp_seconds",
                "When the last job run started (Unix time)",
                value=last.started_at.timestamp(),
            )
            yield GaugeMetricFamily(
                "paperboy_last_run_duration_seconds", "How long the last job run took", value=last.seconds
            )
