"""The serving engine's own view of a run: its Prometheus `/metrics`, polled with aiohttp and
parsed by prometheus_client, kept as a time series of the metrics that tell how loaded it was
(running and waiting requests, KV-cache use, its own latency histograms).

The polling during a run happens in a child process (`python -m tradeoff.load.scrape URL
INTERVAL TIMEOUT`, on its own event loop) that prints one JSON line a scrape, read here on the
running loop. prometheus_client's parser takes 50-75 us a line on a small machine: parsing a
vLLM page of 700-900 lines on the loop that sends the load stalled it for 20-50 ms every scrape,
and in a thread the GIL made that loop's p99 lag worse (measured, 2 cores). Reading a line here
costs well under a millisecond.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import Mapping

import aiohttp
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from tradeoff.engines.openai import api_root
from tradeoff.errors import UserError

# One scrape: its time (time.time(), halfway between asking and the answer) and the value of
# each series kept, keyed `name{label="value",...}` (labels sorted; a counter's name ends in
# _total, a histogram's series are its _bucket, _sum and _count).
Row = tuple[float, dict[str, float]]
# A scrape that failed: its time and why.
Gap = tuple[float, str]


def _names(prefix: str, names: str) -> frozenset[str]:
    return frozenset(prefix + name for name in names.split())


# The metric families kept, by the server that exposes them, named as prometheus_client's parser
# names families (a counter without its _total). Names change between releases (vLLM's
# gpu_cache_usage_perc became kv_cache_usage_perc): both are listed. Every other family is left
# out (process_*, python_gc_*, per-step internals), except tradeoff serve's own: all of them.
KNOWN: dict[str, frozenset[str]] = {
    "vllm": _names(
        "vllm:",
        """num_requests_running num_requests_waiting num_requests_swapped gpu_cache_usage_perc
        kv_cache_usage_perc gpu_prefix_cache_hit_rate prefix_cache_queries prefix_cache_hits
        num_preemptions prompt_tokens generation_tokens request_success
        time_to_first_token_seconds time_per_output_token_seconds inter_token_latency_seconds
        e2e_request_latency_seconds request_queue_time_seconds""",
    ),
    "sglang": _names(
        "sglang:",
        """num_running_reqs num_queue_reqs num_used_tokens token_usage gen_throughput
        cache_hit_rate prompt_tokens generation_tokens num_requests time_to_first_token_seconds
        inter_token_latency_seconds time_per_output_token_seconds e2e_request_latency_seconds
        queue_time_seconds""",
    ),
    "tgi": _names(
        "tgi_",
        """queue_size batch_current_size batch_current_max_tokens request_count request_success
        request_failure request_queue_duration request_duration
        request_mean_time_per_token_duration request_generated_tokens request_input_length""",
    ),
    "llama.cpp": _names(
        "llamacpp:",
        """requests_processing requests_deferred kv_cache_usage_ratio kv_cache_tokens
        prompt_tokens prompt_seconds tokens_predicted tokens_predicted_seconds n_decode
        n_busy_slots_per_decode prompt_tokens_seconds predicted_tokens_seconds""",
    ),
}
TRADEOFF_PREFIX = "tradeoff_"  # tradeoff serve's own (tradeoff.serve.metrics)
# What a URL answering Prometheus text of no family kept is told.
NONE_KEPT = (
    f"Prometheus text, but none of the metrics kept ({', '.join(KNOWN)}'s or tradeoff serve's)"
)
_SERVER_OF = {family: server for server, families in KNOWN.items() for family in families}
# The lines of the families kept (HELP and TYPE comments, samples): only these go to the parser,
# a third or less of a vLLM page.
_KEPT_LINE = re.compile(
    r"^(?:# (?:HELP|TYPE) )?(?:"
    + re.escape(TRADEOFF_PREFIX)
    + r"[A-Za-z0-9_:]*|"
    + "|".join(re.escape(f) for f in sorted(_SERVER_OF, key=len, reverse=True))
    + r")(?:_bucket|_sum|_count|_total|_created)?(?=[ \t{]).*$",
    re.MULTILINE,
)
_SERIES_SUFFIX = re.compile(r"_(?:total|count|sum|bucket)$")
# A scrape's line from the child process can be long (a page of many label sets).
_LINE_LIMIT = 64 * 2**20


def default_scrape_url(base_url: str) -> str:
    """The upstream's `/metrics`, beside its `/v1`: `http://host:8000/v1` -> `.../metrics`."""
    return f"{api_root(base_url)}/metrics"


def scrape_urls(models: Mapping[str, str]) -> set[str]:
    """The `/metrics` of each openai: upstream among a configuration's `models` (alias: ref)."""
    from tradeoff.engines import parse_openai_ref

    refs = [ref for ref in models.values() if ref.startswith("openai:")]
    return {default_scrape_url(parse_openai_ref(ref)[0]) for ref in refs}


def series_key(name: str, labels: dict[str, str]) -> str:
    """`name{a="x",b="y"}` (labels sorted, values quoted and escaped as in the text format)."""
    if not labels:
        return name
    inner = ",".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def _server(family: Metric) -> str | None:
    if family.name.startswith(TRADEOFF_PREFIX):
        return "tradeoff"
    name = family.name
    if family.type == "unknown" and name not in _SERVER_OF:
        # A series without a # TYPE line is a family of its own name: a counter's ends in
        # _total, a histogram's in _count, _sum or _bucket.
        name = _SERIES_SUFFIX.sub("", name)
    return _SERVER_OF.get(name)


def parse(text: str, openmetrics: bool = False) -> tuple[dict[str, float], set[str]]:
    """The known series in a Prometheus text page (`openmetrics`: an OpenMetrics page, read by
    its own parser), and the servers they come from. ValueError if the page is not Prometheus
    text: the parser's complaint, or no metric family at all (the parser reads an empty page, or
    one of comments only, without complaint)."""
    families = openmetrics_families if openmetrics else text_string_to_metric_families
    kept = _KEPT_LINE.findall(text) + (["# EOF"] if openmetrics else [])  # its parser needs it
    sample: dict[str, float] = {}
    servers: set[str] = set()
    for family in families("".join(line + "\n" for line in kept)):
        server = _server(family)
        if server is None:
            continue
        servers.add(server)
        for s in family.samples:
            if s.name != f"{family.name}_created":  # its start time: left out, as on a 0.0.4 page
                sample[series_key(s.name, s.labels)] = float(s.value)
    if not servers and next(iter(families(text)), None) is None:
        raise ValueError("no metric families")
    return sample, servers


class ScrapeFailed(Exception):
    """A scrape that got no sample; the message says why, in a few words."""


def _one_line(text: str, limit: int = 120) -> str:
    return " ".join(text.split())[:limit]


def _session(timeout_s: float) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=1),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        headers={"accept": "text/plain;version=0.0.4", "accept-encoding": "identity"},
        cookie_jar=aiohttp.DummyCookieJar(),
    )


async def scrape(
    session: aiohttp.ClientSession, url: str, timeout_s: float
) -> tuple[Row, set[str]]:
    """One scrape of `url`: its row and the servers whose metrics it holds. ScrapeFailed (why, in
    a few words) if no answer came within `timeout_s`, an HTTP error did, or not Prometheus text."""
    asked = time.time()
    try:
        async with session.get(url) as response:  # redirects followed, as Prometheus does
            body = await response.read()
            status = response.status
            content_type = response.content_type
            redirected = f"redirected to {response.url}, " if response.history else ""
    except asyncio.TimeoutError:
        raise ScrapeFailed(f"no answer within {timeout_s:g} s") from None
    except aiohttp.TooManyRedirects as exc:
        last = exc.history[-1].url if exc.history else url
        raise ScrapeFailed(
            f"more than {len(exc.history)} redirects, the last from {last}"
        ) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise ScrapeFailed(f"no answer ({type(exc).__name__}: {_one_line(str(exc))})") from None
    t = (asked + time.time()) / 2
    text = body.decode("utf-8", "replace")
    if not 200 <= status < 300:
        raise ScrapeFailed(f"{redirected}answered HTTP {status} ({_one_line(text, 80)})")
    if content_type.endswith(("json", "html")):
        raise ScrapeFailed(f"{redirected}not Prometheus text: the answer is {content_type}")
    try:
        sample, servers = parse(text, openmetrics=content_type == "application/openmetrics-text")
    except ValueError as exc:
        raise ScrapeFailed(f"{redirected}not Prometheus text ({_one_line(str(exc), 80)})") from None
    return (t, sample), servers


class Scraper:
    """Scrapes a Prometheus text endpoint every `interval_s` through a run, keeping the known
    serving metrics (KNOWN, and all of tradeoff serve's own) of each scrape in `samples`, in time
    order. A scrape that fails (no answer within `timeout_s`, an HTTP error, not Prometheus text)
    is noted in `gaps`, and polling goes on.

        scraper = Scraper(default_scrape_url(base_url))
        await scraper.check()  # UserError if it does not answer Prometheus text
        scraper.start()
        ...                    # the run
        await scraper.stop()
    """

    def __init__(self, url: str, interval_s: float = 1.0, timeout_s: float = 5.0) -> None:
        if not interval_s > 0:
            raise UserError(f"the scrape interval must be > 0 s, not {interval_s:g}")
        self.url = url
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.samples: list[Row] = []
        self.gaps: list[Gap] = []
        self.servers: set[str] = set()  # whose metrics were seen: "vllm", "tradeoff", ...
        self._untaken: tuple[list[Row], list[Gap]] = ([], [])  # since the last `take`
        self._task: asyncio.Task[None] | None = None
        self._child: asyncio.subprocess.Process | None = None
        self._stopping = False

    def _add(self, row: Row, servers: set[str]) -> None:
        bisect.insort(self.samples, row, key=lambda r: r[0])
        self._untaken[0].append(row)
        self.servers |= servers

    def _gap(self, t: float, reason: str) -> None:
        bisect.insort(self.gaps, (t, reason), key=lambda g: g[0])
        self._untaken[1].append((t, reason))

    def take(self) -> tuple[list[Row], list[Gap]]:
        """The rows and gaps that came since the last call: to store as the run goes, so that
        a run killed keeps what was scraped of the points it finished."""
        taken, self._untaken = self._untaken, ([], [])
        return taken

    async def check(self) -> set[str]:
        """The first scrape, from this process: UserError (one line, naming the URL and the
        problem) unless the URL answers Prometheus text. Its sample is the first row. Returns the
        servers whose metrics it holds (empty: Prometheus text, but none of the metrics kept)."""
        async with _session(self.timeout_s) as session:
            try:
                row, servers = await scrape(session, self.url, self.timeout_s)
            except ScrapeFailed as exc:
                raise UserError(
                    f"scrape URL {self.url}: {exc}; give a server's Prometheus endpoint with "
                    "--scrape URL (vLLM, SGLang, TGI, llama-server --metrics, tradeoff serve: "
                    "/metrics)"
                ) from None
        self._add(row, servers)
        return servers

    async def scrape_now(self) -> None:
        """One scrape now, from this process (its parsing blocks this event loop for a few ms or
        more: between load points, not during one): a row in `samples`, or a gap in `gaps`."""
        async with _session(self.timeout_s) as session:
            try:
                self._add(*await scrape(session, self.url, self.timeout_s))
            except ScrapeFailed as exc:
                self._gap(time.time(), str(exc))

    def start(self) -> None:
        """Scrape every `interval_s` from now until `stop` (from a child process; the rows arrive
        on the running event loop). The first comes once the child is up, a second or so."""
        if self._task is None:
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._follow())

    async def _follow(self) -> None:
        child = self._child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", __name__, self.url, repr(self.interval_s), repr(self.timeout_s),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE, limit=_LINE_LIMIT,
        )  # fmt: skip
        assert child.stdin is not None and child.stdout is not None and child.stderr is not None
        if self._stopping:  # stopped while the child was starting
            child.stdin.close()
        async for line in child.stdout:
            scraped = json.loads(line)
            if "gap" in scraped:
                self._gap(scraped["t"], scraped["gap"])
            else:
                self._add((scraped["t"], scraped["sample"]), set(scraped["servers"]))
        why = _one_line((await child.stderr.read()).decode("utf-8", "replace")[-300:])
        code = await child.wait()
        if not self._stopping:
            self._gap(time.time(), f"the scraping process stopped (exit {code}: {why or 'quiet'})")

    async def stop(self) -> None:
        """Stop scraping: the child finishes the scrape it is in (at most `timeout_s`) and
        exits; every row it sent is in `samples`."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        if self._child is not None and self._child.stdin is not None:
            self._child.stdin.close()  # the child stops at the end of its input
        done, _ = await asyncio.wait([task], timeout=self.timeout_s + 5)
        if not done and self._child is not None:
            with contextlib.suppress(ProcessLookupError):
                self._child.kill()
        self._child = None
        await task


async def _poll(url: str, interval_s: float, timeout_s: float) -> None:
    """The child process: scrape every `interval_s` until the end of standard input, one JSON line
    a scrape to standard output."""
    loop = asyncio.get_running_loop()
    parent = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(parent), sys.stdin)
    ended = asyncio.ensure_future(parent.read())  # b"" once the parent closes it (or is gone)
    async with _session(timeout_s) as session:
        due = loop.time()
        while not ended.done():
            try:
                (t, sample), servers = await scrape(session, url, timeout_s)
                line = {"t": t, "sample": sample, "servers": sorted(servers)}
            except ScrapeFailed as exc:
                line = {"t": time.time(), "gap": str(exc)}
            try:
                sys.stdout.write(json.dumps(line) + "\n")
                sys.stdout.flush()
            except BrokenPipeError:  # the parent is gone
                return
            due += interval_s
            now = loop.time()
            if due < now:  # a slow scrape: skip the ticks it overran rather than catch up
                due = now + interval_s
            await asyncio.wait([ended], timeout=due - now)


def _main(argv: list[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    url, interval_s, timeout_s = argv
    asyncio.run(_poll(url, float(interval_s), float(timeout_s)))


if __name__ == "__main__":
    _main(sys.argv[1:])
