"""The `openai` engine against a real OpenAI-compatible server on loopback: llama-cpp-python's own
server (`llama_cpp.server`) serving the bundled smollm2-135m, profiled with concurrency 2. At
temperature 0 its answers and token counts must agree with the in-process engine's."""

import subprocess
import sys
import time

import httpx
import pytest
from conftest import free_port

from tradeoff.config import parse_spec
from tradeoff.engines.bundled import bundled_path
from tradeoff.runner import profile
from tradeoff.store import Store

LIMIT = 6


@pytest.fixture(scope="module")
def server():
    pytest.importorskip("llama_cpp.server")
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(bundled_path("smollm2-135m")),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "4096",
            "--n_threads",
            "1",
            # by default it cuts a stream short when another request arrives
            "--interrupt_requests",
            "False",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.time() + 120
    while True:
        try:
            if httpx.get(f"{url}/models", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, "llama_cpp.server exited"
        assert time.time() < deadline, "llama_cpp.server did not start"
        time.sleep(0.25)
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def _records(directory):
    store = Store.open(directory)
    try:
        return store.records().set_index(["task", "item_id"]).sort_index()
    finally:
        store.close()


def test_server_profile_agrees_with_in_process(tmp_path, server):
    common = {"tasks": ["arith", "facts"], "limit": LIMIT, "sampling": {"max_tokens": 24}}
    served = parse_spec(
        {
            **common,
            "models": {"served": f"openai:{server}#smollm2"},
            # llama-cpp-python's server defaults to repeat_penalty 1.1; the in-process engine uses
            # none, so ask for none to compare like with like.
            "model_options": {"served": {"extra_body": {"repeat_penalty": 1.0}}},
            "concurrency": 2,
        }
    )
    local = parse_spec({**common, "models": {"local": "smollm2-135m"}})
    r_served = profile(served, tmp_path / "served", notify=lambda m: None)
    r_local = profile(local, tmp_path / "local", notify=lambda m: None)
    assert r_served.status == r_local.status == "finished"
    assert r_served.errors == 0

    a, b = _records(tmp_path / "served"), _records(tmp_path / "local")
    assert len(a) == len(b) == 2 * LIMIT
    assert list(a["output"]) == list(b["output"])
    assert list(a["output_tokens"]) == list(b["output_tokens"])
    assert list(a["score"]) == list(b["score"])
    # the server sends no usage: input tokens are missing, not zero, and so are FLOPs
    assert a["input_tokens"].isna().all() and a["flops"].isna().all()
    assert (a["ttft_s"] > 0).all() and (a["ttft_s"] <= a["e2e_s"]).all()
    assert a["energy_missing"].str.contains("remote server").all()
