"""Prometheus text exposition (format 0.0.4) and the /metrics endpoint that serves it, stdlib only.

The endpoint answers on its own daemon threads and only reads counters, so a slow or stuck scraper
never reaches the audio path; every scrape renders a fresh snapshot.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from kws_daemon.errors import KwsError
from kws_daemon.hooks import HookCounters
from kws_daemon.metrics import BUCKETS_MS, Histogram, LatencyStats

log = logging.getLogger("kws_daemon.metrics")
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
Labels = Mapping[str, str]


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return str(v) if isinstance(v, int) else repr(float(v))


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _labels(labels: Labels) -> str:
    return "{" + ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items()) + "}" if labels else ""


class Exposition:
    """One scrape's text: each family once, its HELP and TYPE lines first, then its samples."""

    def __init__(self) -> None:
        self._lines: list[str] = []

    def _family(self, name: str, kind: str, help: str) -> None:
        self._lines += [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]

    def add(self, name: str, kind: str, help: str, samples: Iterable[tuple[Labels, float]]) -> None:
        """A counter or gauge family; `samples` holds (labels, value) pairs."""
        self._family(name, kind, help)
        self._lines += [f"{name}{_labels(labels)} {_value(value)}" for labels, value in samples]

    def histogram(
        self, name: str, help: str, series: Iterable[tuple[Labels, Histogram]], scale: float
    ) -> None:
        """Histograms recorded in ms, exposed in the unit `scale` converts ms to (Prometheus: seconds)."""
        self._family(name, "histogram", help)
        for labels, h in series:
            for bound, n in zip((*BUCKETS_MS, math.inf), h.cumulative, strict=True):
                self._lines.append(f"{name}_bucket{_labels({**labels, 'le': _value(bound * scale)})} {n}")
            self._lines.append(f"{name}_sum{_labels(labels)} {_value(h.sum_ms * scale)}")
            self._lines.append(f"{name}_count{_labels(labels)} {h.count}")

    def text(self) -> str:
        return "\n".join(self._lines) + "\n"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], family: int, handler: type[BaseHTTPRequestHandler]) -> None:
        self.address_family = family  # read by the base constructor when it creates the socket
        super().__init__(address, handler)


def _handler(collect: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kws-daemon"
        timeout = 10  # a scraper that connects and says nothing does not keep a thread forever

        def do_GET(self) -> None:
            if self.path.split("?", 1)[0] != "/metrics":
                self.send_error(404, "only /metrics is served here")
                return
            try:
                body = collect().encode()
            except Exception:  # a bug in collecting must not take the endpoint (or the daemon) down
                log.exception("metrics: collecting failed")
                self.send_error(500)
                return
            self.send_response(200)
            self.send_header("Content-Type", CONTENT_TYPE)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            log.debug("metrics: %s " + format, self.address_string(), *args)

    return Handler


class MetricsServer:
    """GET /metrics on host:port, answered from `collect` on daemon threads."""

    def __init__(self, host: str, port: int, collect: Callable[[], str]) -> None:
        try:
            family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
            self._server = _Server((host, port), family, _handler(collect))
        except OSError as e:
            raise KwsError(f"metrics.listen {host}:{port}: cannot listen ({e.strerror or e})") from None
        port = int(self._server.server_address[1])  # the one the kernel chose for port 0
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"
        self.loopback = ipaddress.ip_address(str(self._server.server_address[0])).is_loopback
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()


def add_latency(out: Exposition, stats: LatencyStats) -> None:
    out.histogram(
        "kws_latency_seconds",
        "Latency per stage; keyword_end_to_event and keyword_end_to_hook are end to end, from the end "
        "of the keyword's audio.",
        [({"stage": stage}, latency.histogram()) for stage, latency in stats.stages().items()],
        scale=1e-3,
    )


def add_hooks(out: Exposition, by_kind: dict[str, HookCounters]) -> None:
    hooks = sorted(by_kind.items())
    for field, help_ in (
        ("runs", "Hook runs started."),
        ("failures", "Hook runs that failed (exit status, HTTP error, I/O error)."),
        ("timeouts", "Hook runs killed or abandoned at their timeout."),
        ("dropped", "Events not run because the hook's queue was full."),
    ):
        out.add(
            f"kws_hook_{field}_total",
            "counter",
            help_,
            [({"kind": k}, getattr(h, field)) for k, h in hooks],
        )
