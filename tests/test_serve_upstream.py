"""`tradeoff serve` when its upstream fails: 502 (an error event once a stream has started), 504
after the spec's timeout, and every failed request stored with its error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import pytest
from serve_support import (
    AUTH,
    CHAT,
    ENDPOINTS,
    FAILING,
    KEY,
    PATIENCE_S,
    UPSTREAM_TIMEOUT_S,
    assert_error,
    assert_stopped_cleanly,
    running,
    sse_events,
    valid,
)


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("model", sorted(FAILING))
def test_upstream_failure_is_502(client: httpx.Client, endpoint: str, model: str):
    error = assert_error(client.post(endpoint, json=valid(endpoint, model)), 502)
    assert error["type"] == "upstream_error"
    r = client.post(endpoint, json=valid(endpoint, model, stream=True))
    if model == "broken":  # fails before any text: an honest HTTP error
        assert_error(r, 502)
    else:  # fails after the answer started: a 200 stream that says so, then [DONE]
        assert r.status_code == 200, r.text
        payloads = sse_events(r.text)
        last = json.loads(payloads[-2])
        assert last["error"]["type"] == "upstream_error", last
        assert last["tradeoff"]["config"] == model, last  # what ran, as a finished stream says


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_timeout_is_504(client: httpx.Client, endpoint: str, stream: bool):
    """The upstream never answers; the server gives up after the spec's timeout_s (and the client
    would give up after PATIENCE_S)."""
    t0 = time.monotonic()
    r = client.post(endpoint, json=valid(endpoint, "slow", stream=stream))
    error = assert_error(r, 504)
    assert error["type"] == "upstream_timeout"
    assert time.monotonic() - t0 >= 0.9 * UPSTREAM_TIMEOUT_S


@pytest.mark.slow
def test_failed_requests_are_stored_with_their_error(tmp_path: Path):
    """A 502 or 504 is still accounted for: a record with its error, once the server stops."""
    sent = {("broken", 502): 0, ("slow", 504): 0, ("dropper", 502): 0}
    ids = []  # a failure's answer names its record, as a success's does
    with (
        running(tmp_path, "--api-key", KEY) as server,
        httpx.Client(base_url=server.root, headers=AUTH, timeout=PATIENCE_S) as c,
    ):
        for model, status in sent:
            for endpoint in ENDPOINTS:
                stream = model == "dropper" and endpoint == CHAT
                r = c.post(endpoint, json=valid(endpoint, model, stream=stream))
                assert r.status_code == (200 if stream else status), r.text
                sent[(model, status)] += 1
                if not stream:
                    ids.append(r.headers["x-tradeoff-request-id"])
        assert c.post(CHAT, json=valid(CHAT)).status_code == 200
    records = assert_stopped_cleanly(server)
    for (model, status), count in sent.items():
        rows = records[records["config"] == model]
        assert len(rows) == count, (model, records.to_dict("records"))
        for error, extra in zip(rows["error"], rows["extra"]):
            assert isinstance(error, str) and error, (model, error)
            assert extra["http_status"] == status, (model, extra)
            if status == 504:
                assert "timeout" in error, error
    assert set(ids) <= set(records["item_id"]) and len(set(ids)) == len(ids), ids
    ok = records[records["config"] == "fast"]
    assert len(ok) == 1 and ok["error"].isna().all()
