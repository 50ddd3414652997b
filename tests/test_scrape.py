"""Scraping a server's Prometheus metrics through a run: a real `tradeoff serve` on loopback (in
front of benchmarks/fast_server.py) scraped while it answers, endpoints that do not answer or do
not speak Prometheus text, and a server killed mid-scrape. The time series goes to a real run
store."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from aiohttp import web
from conftest import Served, free_port, static_files
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from serve_support import MESSAGES, running

from tradeoff.errors import UserError
from tradeoff.load.scrape import Scraper, default_scrape_url, parse
from tradeoff.store import Store

SERVED = 'tradeoff_served_total{model="fast"}'


def test_default_url_is_the_upstreams_metrics() -> None:
    assert default_scrape_url("http://h:8000/v1") == "http://h:8000/metrics"
    assert default_scrape_url("http://h:8000/v1/") == "http://h:8000/metrics"
    assert default_scrape_url("http://h:8000") == "http://h:8000/metrics"


def test_parse_keeps_the_serving_metrics_and_ignores_the_rest() -> None:
    r = CollectorRegistry()
    labels = ["model_name"]
    Gauge("vllm:num_requests_running", "", labels, registry=r).labels("m").set(3)
    Gauge("vllm:kv_cache_usage_perc", "", labels, registry=r).labels("m").set(0.25)
    Counter("vllm:prompt_tokens", "", labels, registry=r).labels("m").inc(7)
    ttft = Histogram("vllm:time_to_first_token_seconds", "", labels, buckets=[0.1, 1], registry=r)
    ttft.labels("m").observe(0.5)
    # Not kept: another histogram whose name contains a kept one, and process metrics.
    Histogram("vllm:request_prompt_tokens", "", labels, registry=r).labels("m").observe(3)
    Gauge("process_open_fds", "", registry=r).set(12)
    Gauge("llamacpp:requests_deferred", "", registry=r).set(2)
    Gauge("sglang:num_queue_reqs", "", registry=r).set(4)
    Gauge("tgi_queue_size", "", registry=r).set(5)
    sample, servers = parse(generate_latest(r).decode())
    assert servers == {"vllm", "llama.cpp", "sglang", "tgi"}
    assert sample['vllm:num_requests_running{model_name="m"}'] == 3
    assert sample['vllm:kv_cache_usage_perc{model_name="m"}'] == 0.25
    assert sample['vllm:prompt_tokens_total{model_name="m"}'] == 7
    assert sample['vllm:time_to_first_token_seconds_bucket{le="0.1",model_name="m"}'] == 0
    assert sample['vllm:time_to_first_token_seconds_bucket{le="1.0",model_name="m"}'] == 1
    assert sample['vllm:time_to_first_token_seconds_count{model_name="m"}'] == 1
    assert sample["llamacpp:requests_deferred"] == 2
    assert sample["sglang:num_queue_reqs"] == 4 and sample["tgi_queue_size"] == 5
    assert not any(k.startswith(("process_", "vllm:request_prompt")) for k in sample), sample
    # Prometheus text without a known metric is still Prometheus text: kept empty.
    assert parse("# TYPE other gauge\nother 1\n") == ({}, set())


def test_parse_keeps_counters_and_histograms_exposed_without_a_type() -> None:
    """A counter or a histogram's count without a `# TYPE` line is a family of its sample's name
    (`vllm:prompt_tokens_total`), not the name kept: it was dropped, and an untyped gauge kept."""
    page = (
        "vllm:num_requests_running 2\n"
        'vllm:prompt_tokens_total{model_name="m"} 10\n'
        "vllm:e2e_request_latency_seconds_count 4\n"
        "vllm:request_prompt_tokens_count 3\n"  # not kept, though it ends as a kept one's series
    )
    assert parse(page) == (
        {
            "vllm:num_requests_running": 2,
            'vllm:prompt_tokens_total{model_name="m"}': 10,
            "vllm:e2e_request_latency_seconds_count": 4,
        },
        {"vllm"},
    )


@contextlib.asynccontextmanager
async def answering(routes: list[web.RouteDef]) -> AsyncIterator[str]:
    """A small aiohttp server on loopback, on this event loop: its URL, the server stopped after."""
    app = web.Application()
    app.add_routes(routes)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


# vLLM's metrics as an OpenMetrics exporter writes them: a counter's family is named without
# _total, its samples with it, and _created beside them; an exemplar; # EOF at the end.
OPENMETRICS_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 2.0
# HELP vllm:prompt_tokens Number of prefill tokens processed.
# TYPE vllm:prompt_tokens counter
vllm:prompt_tokens_total{model_name="m"} 300.0
vllm:prompt_tokens_created{model_name="m"} 1.7e+09
# HELP vllm:request_success Count of successfully processed requests.
# TYPE vllm:request_success counter
vllm:request_success_total{finished_reason="length",model_name="m"} 30.0
# HELP vllm:e2e_request_latency_seconds Histogram of end to end request latency in seconds.
# TYPE vllm:e2e_request_latency_seconds histogram
vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"} 29.0 # {trace_id="a"} 0.5
vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"} 30.0
vllm:e2e_request_latency_seconds_count{model_name="m"} 30.0
vllm:e2e_request_latency_seconds_sum{model_name="m"} 12.5
vllm:e2e_request_latency_seconds_created{model_name="m"} 1.7e+09
# EOF
"""


def test_an_openmetrics_page_keeps_its_counters() -> None:
    """A server answering OpenMetrics (whatever the Accept header asks) was read with the 0.0.4
    parser, which names a counter's family by its sample, `vllm:prompt_tokens_total`: no counter
    of the page was kept, and nothing said so."""

    async def metrics(request: web.Request) -> web.Response:
        kind = "application/openmetrics-text; version=1.0.0; charset=utf-8"
        return web.Response(body=OPENMETRICS_PAGE.encode(), headers={"content-type": kind})

    async def go() -> dict[str, float]:
        async with answering([web.get("/metrics", metrics)]) as url:
            scraper = Scraper(f"{url}/metrics")
            assert await scraper.check() == {"vllm"}
        return scraper.samples[0][1]

    assert asyncio.run(go()) == {
        'vllm:num_requests_running{model_name="m"}': 2,
        'vllm:prompt_tokens_total{model_name="m"}': 300,
        'vllm:request_success_total{finished_reason="length",model_name="m"}': 30,
        'vllm:e2e_request_latency_seconds_bucket{le="1.0",model_name="m"}': 29,
        'vllm:e2e_request_latency_seconds_bucket{le="+Inf",model_name="m"}': 30,
        'vllm:e2e_request_latency_seconds_count{model_name="m"}': 30,
        'vllm:e2e_request_latency_seconds_sum{model_name="m"}': 12.5,
    }


def test_a_metrics_endpoint_that_redirects_is_followed() -> None:
    """prometheus_client's app mounted at /metrics (FastAPI's recipe) answers 307 to /metrics/;
    Prometheus follows it, tradeoff refused the URL as "answered HTTP 307 ()", naming no target."""

    async def metrics(request: web.Request) -> web.Response:
        return web.Response(text="vllm:num_requests_running 2\n")

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect(request.path + "/")

    async def go() -> tuple[str, dict[str, float], str]:
        routes = [
            web.get("/metrics", moved),
            web.get("/metrics/", metrics),
            web.get("/gone", moved),
        ]
        async with answering(routes) as root:
            followed = Scraper(f"{root}/metrics")
            assert await followed.check() == {"vllm"}
            with pytest.raises(UserError) as gone:  # to a page that is not there
                await Scraper(f"{root}/gone").check()
        return root, followed.samples[0][1], str(gone.value)

    root, sample, gone = asyncio.run(go())
    assert sample == {"vllm:num_requests_running": 2}
    assert gone.startswith(f"scrape URL {root}/gone: redirected to {root}/gone/, answered HTTP 404")
    assert "\n" not in gone


@pytest.mark.parametrize("text", ["", "# only a comment\n", "<html><body>hi</body></html>", "ok"])
def test_parse_refuses_what_is_not_prometheus_text(text: str) -> None:
    with pytest.raises(ValueError):
        parse(text)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """`tradeoff serve` before a canned upstream that sends a chunk every 50 ms."""
    with running(tmp_path_factory.mktemp("serve"), upstream=("--delay-ms", "50")) as s:
        yield s


async def ask(client: httpx.AsyncClient, max_tokens: int) -> None:
    body = {"model": "fast", "messages": MESSAGES, "max_tokens": max_tokens, "stream": True}
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.status_code == 200
        async for _ in response.aiter_bytes():
            pass


def test_a_scrape_of_tradeoff_serve_is_a_time_series(served: Served, tmp_path: Path) -> None:
    async def go() -> tuple[Scraper, float]:
        scraper = Scraper(default_scrape_url(served.url), interval_s=0.1)
        assert await scraper.check() == {"tradeoff"}
        scraper.start()
        async with httpx.AsyncClient(base_url=served.root, timeout=60) as client:
            for _ in range(4):
                await ask(client, max_tokens=2)
            # One answer in flight (20 chunks, 50 ms apart) while this process scrapes.
            slow = asyncio.ensure_future(ask(client, max_tokens=20))
            while (await client.get("/metrics")).text.find("tradeoff_in_flight 1.0") < 0:
                await asyncio.sleep(0.01)
            await scraper.scrape_now()
            in_flight = scraper.samples[-1][1]["tradeoff_in_flight"]
            await slow
        await asyncio.sleep(0.5)  # the child's scrapes after the last answer
        await scraper.stop()
        return scraper, in_flight

    scraper, in_flight = asyncio.run(go())
    assert in_flight == 1
    assert not scraper.gaps, scraper.gaps
    times = [t for t, _ in scraper.samples]
    assert len(times) >= 6 and times == sorted(times)
    served_counts = [sample.get(SERVED, 0.0) for _, sample in scraper.samples]
    assert served_counts == sorted(served_counts)  # a counter, sampled in time order
    assert served_counts[0] == 0 and served_counts[-1] == 5
    assert len(set(served_counts)) >= 3  # seen growing, not only before and after
    assert all("tradeoff_in_flight" in sample for _, sample in scraper.samples)
    last = scraper.samples[-1][1]
    assert last['tradeoff_time_to_first_token_seconds_count{model="fast"}'] == 5

    store = Store.create(tmp_path / "run", spec={}, host={})
    store.add_scrapes(scraper.url, scraper.samples, [(times[1], "a gap, for the test")])
    store.close()
    stored = Store.open(tmp_path / "run").scrapes()
    gaps = stored[stored["error"].notna()]
    assert list(gaps["error"]) == ["a gap, for the test"] and list(gaps["t"]) == [times[1]]
    series = stored[stored["series"] == SERVED]
    assert list(series["t"]) == [t for t, sample in scraper.samples if SERVED in sample]
    assert list(series["value"]) == [
        sample[SERVED] for _, sample in scraper.samples if SERVED in sample
    ]
    assert set(stored["source"]) == {scraper.url}


def test_a_url_that_does_not_answer_is_a_user_error() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(UserError, match=f"scrape URL {url}: no answer"):
        asyncio.run(Scraper(url).check())


@pytest.fixture(scope="module")
def static(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Python's http.server on a directory: its listing is HTML; an empty file is empty."""
    root = tmp_path_factory.mktemp("static")
    (root / "empty.txt").write_text("")
    with static_files(root) as url:
        yield url


def test_an_answer_that_is_not_prometheus_text_is_a_user_error(served: Served, static: str):
    for url, why in [
        (f"{served.url}/models", "not Prometheus text: the answer is application/json"),
        (f"{static}/", "not Prometheus text: the answer is text/html"),
        (f"{static}/empty.txt", "not Prometheus text (no metric families)"),
        (f"{static}/nothing-here", "answered HTTP 404"),
    ]:
        with pytest.raises(UserError) as caught:
            asyncio.run(Scraper(url).check())
        message = str(caught.value)
        assert message.startswith(f"scrape URL {url}: {why}") and "\n" not in message, message


def test_a_server_killed_mid_scrape_is_a_gap_and_the_scraper_stops_cleanly(tmp_path) -> None:
    with running(tmp_path) as doomed:

        async def go() -> tuple[Scraper, float]:
            scraper = Scraper(default_scrape_url(doomed.url), interval_s=0.05, timeout_s=2)
            await scraper.check()
            scraper.start()
            while len(scraper.samples) < 3:  # the child's first rows
                await asyncio.sleep(0.05)
            doomed.proc.kill()
            while not scraper.gaps:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)
            started = time.monotonic()
            await scraper.stop()
            return scraper, time.monotonic() - started

        scraper, stopping_s = asyncio.run(go())
        doomed.stop()
    killed_at = scraper.gaps[0][0]
    assert all(t < killed_at for t, _ in scraper.samples)
    assert len(scraper.gaps) >= 2  # polling went on after the first failure
    assert all(reason.startswith("no answer (") for _, reason in scraper.gaps), scraper.gaps
    assert stopping_s < 2
