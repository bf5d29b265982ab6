"""Latency histograms, the Prometheus text they become, the /metrics endpoint, and its config key."""

from __future__ import annotations

import json
import math
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from kws_daemon.config import ConfigError, MetricsConfig, parse
from kws_daemon.console import write_json
from kws_daemon.errors import KwsError
from kws_daemon.metrics import BUCKETS_MS, Latency, distribution
from kws_daemon.prometheus import CONTENT_TYPE, Exposition, MetricsServer


def test_latency_buckets_are_cumulative_with_le_semantics() -> None:
    latency = Latency(capacity=4)
    for ms in (0.05, 0.06, 3.0, 3.0, 20000.0):  # a value on a bound falls in that bound's bucket
        latency.observe(ms)
    h = latency.histogram()
    by_bound = dict(zip((*BUCKETS_MS, float("inf")), h.cumulative, strict=True))
    assert by_bound[0.05] == 1
    assert by_bound[0.1] == 2
    assert by_bound[2.5] == 2
    assert by_bound[5] == 4
    assert by_bound[10000] == 4
    assert by_bound[float("inf")] == h.count == 5  # beyond the last bound: +Inf only
    assert h.sum_ms == pytest.approx(20006.11)
    assert list(h.cumulative) == sorted(h.cumulative)
    # the percentiles keep the most recent `capacity` values, the buckets everything
    assert latency.percentiles((50,)) == (3.0,)


def test_distribution_of_a_sample_and_of_none(tmp_path: Path) -> None:
    spread = distribution([float(ms) for ms in range(1, 101)])
    assert spread == {"p50": 50.5, "p95": 95.05, "p99": 99.01, "max": 100.0, "count": 100}
    empty = distribution([])
    assert empty["count"] == 0 and all(math.isnan(empty[k]) for k in ("p50", "p95", "p99", "max"))
    write_json(tmp_path / "out.json", {"empty": empty})  # JSON has no NaN: null
    assert json.loads((tmp_path / "out.json").read_text())["empty"]["p95"] is None


def test_exposition_text() -> None:
    out = Exposition()
    out.add("kws_x_total", "counter", "Things.", [({"keyword": 'a"b\\c\nd'}, 3), ({}, 0.5)])
    out.add("kws_g", "gauge", "A gauge.", [({}, float("nan")), ({"k": "inf"}, float("inf"))])
    latency = Latency()
    latency.observe(2.0)
    out.histogram("kws_lat_seconds", "Latency.", [({"stage": "vad"}, latency.histogram())], scale=1e-3)
    lines = out.text().splitlines()
    assert lines[:4] == [
        "# HELP kws_x_total Things.",
        "# TYPE kws_x_total counter",
        'kws_x_total{keyword="a\\"b\\\\c\\nd"} 3',
        "kws_x_total 0.5",
    ]
    assert lines[6:8] == ["kws_g NaN", 'kws_g{k="inf"} +Inf']
    assert "# TYPE kws_lat_seconds histogram" in lines
    assert 'kws_lat_seconds_bucket{stage="vad",le="0.001"} 0' in lines
    assert 'kws_lat_seconds_bucket{stage="vad",le="0.0025"} 1' in lines
    assert 'kws_lat_seconds_bucket{stage="vad",le="+Inf"} 1' in lines
    assert 'kws_lat_seconds_sum{stage="vad"} 0.002' in lines
    assert 'kws_lat_seconds_count{stage="vad"} 1' in lines
    assert out.text().endswith("\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def server() -> Iterator[tuple[MetricsServer, list[str]]]:
    pages = ["kws_up 1\n"]

    def collect() -> str:
        page = pages.pop(0)
        if page == "boom":
            raise RuntimeError("collect failed")
        return page

    srv = MetricsServer("127.0.0.1", _free_port(), collect)
    srv.start()
    yield srv, pages
    srv.close()


def test_server_serves_metrics_only(server: tuple[MetricsServer, list[str]]) -> None:
    srv, _ = server
    with urllib.request.urlopen(srv.url, timeout=10) as response:
        assert response.headers["Content-Type"] == CONTENT_TYPE
        assert response.read() == b"kws_up 1\n"
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(srv.url.replace("/metrics", "/other"), timeout=10)
    assert error.value.code == 404


def test_server_survives_a_failing_collect(server: tuple[MetricsServer, list[str]]) -> None:
    srv, pages = server
    pages[:] = ["boom", "kws_up 1\n"]
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(srv.url, timeout=10)
    assert error.value.code == 500
    with urllib.request.urlopen(srv.url, timeout=10) as response:
        assert response.read() == b"kws_up 1\n"


def test_server_on_a_taken_port_is_a_one_line_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(KwsError, match=rf"^metrics\.listen 127\.0\.0\.1:{port}: cannot listen \(.+\)$"):
            MetricsServer("127.0.0.1", port, str)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [
        ("127.0.0.1:9464", ("127.0.0.1", 9464)),
        ("0.0.0.0:1", ("0.0.0.0", 1)),
        ("localhost:65535", ("localhost", 65535)),
        ("[::1]:9464", ("::1", 9464)),
        ("", None),
        (None, None),
    ],
)
def test_metrics_listen_parses(listen: str | None, expected: tuple[str, int] | None) -> None:
    assert parse({"metrics": {"listen": listen}}).metrics == MetricsConfig(listen=expected)


@pytest.mark.parametrize(
    "listen", ["9464", ":9464", "host:0", "host:65536", "::1:9464", "a b:80", 9464, ["::1"]]
)
def test_metrics_listen_rejects(listen: object) -> None:
    with pytest.raises(ConfigError, match=r"^metrics\.listen: must be a quoted \"HOST:PORT\""):
        parse({"metrics": {"listen": listen}})


def test_metrics_is_off_by_default_and_knows_its_keys() -> None:
    assert parse({}).metrics.listen is None
    with pytest.raises(ConfigError, match=r"metrics\.port: unknown key"):
        parse({"metrics": {"port": 9464}})
