"""Prometheus metrics of one server (its own registry, so that two apps in one process do not collide)."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from pocket_ggml.serve.pool import ModelPool

# First audio comes after one frame (~0.1-1 s on small CPUs); whole requests last up to minutes.
_FIRST_BYTE_BUCKETS = (0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.5, 5.0, 10.0, 30.0)
_TOTAL_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)


class Metrics:
    def __init__(self, pool: ModelPool):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "pocket_requests", "HTTP requests by route and outcome", ["route", "outcome"], registry=self.registry
        )
        self.first_byte = Histogram(
            "pocket_first_byte_seconds",
            "Arrival to the first body byte of audio responses",
            ["route"],
            buckets=_FIRST_BYTE_BUCKETS,
            registry=self.registry,
        )
        self.total = Histogram(
            "pocket_request_seconds",
            "Arrival to the end of the response",
            ["route"],
            buckets=_TOTAL_BUCKETS,
            registry=self.registry,
        )
        self.audio = Counter("pocket_audio_seconds", "Seconds of audio produced", registry=self.registry)
        Gauge("pocket_queue_depth", "Requests waiting for an instance", registry=self.registry).set_function(
            lambda: pool.waiting
        )
        Gauge("pocket_busy_instances", "Instances lent to a request", registry=self.registry).set_function(
            lambda: pool.busy
        )
        Gauge("pocket_instances", "Loaded model instances", registry=self.registry).set(pool.workers)

    def request(self, route: str, outcome: str, first_byte: float | None, seconds: float, audio: float) -> None:
        self.requests.labels(route, outcome).inc()
        self.total.labels(route).observe(seconds)
        if audio > 0:
            self.audio.inc(audio)
            if first_byte is not None:
                self.first_byte.labels(route).observe(first_byte)

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
