"""`tradeoff serve --policy`: each request runs as the configuration its policy routes it to,
with that configuration's own max_tokens and model options (the route's were its first
configuration's, and none), against benchmarks/fast_server.py, which logs the bodies it gets."""

from __future__ import annotations

import json
import sqlite3

import httpx
import yaml
from conftest import fast_server, run_cli, serve_process


def test_a_routed_request_runs_with_its_configuration_s_max_tokens_and_options(tmp_path):
    log = tmp_path / "bodies.jsonl"
    for url in fast_server("--log-requests", str(log)):
        spec = {
            "models": {"a": f"openai:{url}#m", "b": f"openai:{url}#m2"},
            "model_options": {"a": {"extra_body": {"marker": 1}}},
            "tasks": ["arith"],
            "limit": 12,
            "configs": [
                {"strategy": "single", "model": "a", "max_tokens": 3, "name": "short"},
                {"strategy": "single", "model": "b", "max_tokens": 7, "name": "long"},
            ],
        }
        (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
        run = tmp_path / "run"
        assert run_cli("profile", str(tmp_path / "spec.yaml"), "--out", str(run)).returncode == 0
        con = sqlite3.connect(run / "tradeoff.sqlite")  # long right, short wrong: as scored
        with con:
            con.execute(
                "UPDATE records SET score = config_id IN "
                "(SELECT config_id FROM configs WHERE name = 'long')"
            )
        con.close()
        policy = tmp_path / "p.json"
        fit = run_cli(
            "policy", "fit", str(run), "--configs", "long,short", "--strong-fraction", "0",
            "--cost", "tokens", "-o", str(policy),
        )  # fmt: skip
        assert fit.returncode == 0, fit.stderr
        log.write_text("")
        with serve_process("--policy", str(policy), "--out", str(tmp_path / "served")) as s:
            ask = {"model": "p", "messages": [{"role": "user", "content": "What is 2+2?"}]}
            answer = httpx.post(f"{s.url}/chat/completions", json=ask, timeout=60)
        assert answer.status_code == 200, answer.text
        assert answer.headers["x-tradeoff-routed-to"] == "short"
        (body,) = [json.loads(line) for line in log.read_text().splitlines()]
        # short's 3 tokens, not long's 7 (the policy's first); a's options, not none
        assert (body["max_tokens"], body.get("marker")) == (3, 1), body
