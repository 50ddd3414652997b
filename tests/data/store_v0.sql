-- A run store as written by tradeoff before schema versioning (commit d7a97a1; user_version 0),
-- dumped with sqlite3's iterdump. Made by that commit's
--   tradeoff profile --model smollm2-135m --task arith --limit 3 --max-tokens 2 --out DIR
-- then cut back to what a SIGKILL after two records leaves: the third record deleted, the run
-- 'running' and its session open.
BEGIN TRANSACTION;
CREATE TABLE configs (
    run_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    name TEXT NOT NULL,
    spec TEXT NOT NULL,
    PRIMARY KEY (run_id, config_id)
);
INSERT INTO "configs" VALUES('bd8f3805e8a1','c1a555531061','smollm2-135m','{"strategy": "single", "model": "smollm2-135m", "models": {"smollm2-135m": "smollm2-135m"}, "sampling": {"temperature": 0.0, "max_tokens": 2, "seed": 0}}');
CREATE TABLE items (
    run_id TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    item TEXT NOT NULL,
    PRIMARY KEY (run_id, task, item_id)
);
INSERT INTO "items" VALUES('bd8f3805e8a1','arith','arith-0000','{"id": "arith-0000", "prompt": "What is 10 plus 3?", "reference": "13", "task": "arith", "meta": {"difficulty": 1, "template": "l1_plus"}}');
INSERT INTO "items" VALUES('bd8f3805e8a1','arith','arith-0001','{"id": "arith-0001", "prompt": "A farm has 2 cows and 6 chickens. How many legs do the animals have in total?", "reference": "20", "task": "arith", "meta": {"difficulty": 2, "template": "l2_legs"}}');
INSERT INTO "items" VALUES('bd8f3805e8a1','arith','arith-0002','{"id": "arith-0002", "prompt": "A library has 487 books. It buys 224 new books and gives away 134 old ones. How many books does the library have now?", "reference": "577", "task": "arith", "meta": {"difficulty": 3, "template": "l3_library"}}');
CREATE TABLE meters (
    run_id TEXT NOT NULL,
    session_started_at REAL NOT NULL,
    summary TEXT NOT NULL
);
CREATE TABLE records (
    run_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    task TEXT NOT NULL,
    item_id TEXT NOT NULL,
    sample INTEGER NOT NULL,
    output TEXT NOT NULL,
    score REAL,
    parsed TEXT,
    error TEXT,
    input_tokens INTEGER,
    output_tokens INTEGER NOT NULL,
    ttft_s REAL,
    e2e_s REAL NOT NULL,
    itl_s REAL,
    decode_tps REAL,
    energy_j REAL,
    energy_source TEXT,
    energy_missing TEXT,
    flops REAL,
    peak_rss_bytes INTEGER,
    cost_usd REAL,
    calls TEXT NOT NULL,
    extra TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (run_id, config_id, task, item_id, sample)
);
INSERT INTO "records" VALUES('bd8f3805e8a1','c1a555531061','arith','arith-0000',0,'10',0.0,'10',NULL,48,2,2.67961951000074805051e-01,2.8164556800004447723e-01,1.34600789999694825382e-02,7.38991028945559520497e+01,NULL,NULL,'no RAPL: /sys/class/powercap does not exist (VM or non-Intel/AMD host); no model runs on a GPU',10602413568.0,356491264,NULL,'[{"model": "smollm2-135m", "mode": "chat", "input_tokens": 48, "output_tokens": 2, "token_count_source": "exact", "ttft_s": 0.26789886300002763, "e2e_s": 0.2814308270000083, "itl_s": 0.013460078999969483, "finish_reason": "length", "energy_j": null, "energy_source": null, "energy_missing": "no RAPL: /sys/class/powercap does not exist (VM or non-Intel/AMD host); no model runs on a GPU", "flops": 10602413568.0, "bytes": 196517376.0, "roofline_s": null, "mean_power_w": null, "device_memory_bytes": null, "error": null}]','{}',1.79616015943203926087e+09);
INSERT INTO "records" VALUES('bd8f3805e8a1','c1a555531061','arith','arith-0001',0,'The farm',0.0,NULL,NULL,60,2,3.71661546000041198567e-01,3.87024338000060197373e-01,1.51239159999931871425e-02,6.57620007432348074871e+01,NULL,NULL,'no RAPL: /sys/class/powercap does not exist (VM or non-Intel/AMD host); no model runs on a GPU',13196487168.0,357933056,NULL,'[{"model": "smollm2-135m", "mode": "chat", "input_tokens": 60, "output_tokens": 2, "token_count_source": "exact", "ttft_s": 0.3716251089999787, "e2e_s": 0.38683145899995, "itl_s": 0.015123915999993187, "finish_reason": "length", "energy_j": null, "energy_source": null, "energy_missing": "no RAPL: /sys/class/powercap does not exist (VM or non-Intel/AMD host); no model runs on a GPU", "flops": 13196487168.0, "bytes": 197346816.0, "roofline_s": null, "mean_power_w": null, "device_memory_bytes": null, "error": null}]','{}',1.79616015981960415841e+09);
CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    ended_at REAL,
    status TEXT NOT NULL,
    spec TEXT NOT NULL,
    host TEXT NOT NULL
);
INSERT INTO "runs" VALUES('bd8f3805e8a1',1.7961601591408951282e+09,NULL,'running','{"models": {"smollm2-135m": "smollm2-135m"}, "tasks": [{"ref": "arith", "prompt_field": null, "answer_field": null, "id_field": null, "scorer": null, "pattern": null}], "configs": [{"strategy": "single", "name": null, "model": "smollm2-135m", "models": null, "temperature": null, "max_tokens": null, "n": null, "adaptive": null, "budget": null, "think_budget": null, "signal": null, "k": null, "threshold": null, "threshold_low": null, "window": null, "policy": null}], "limit": 3, "samples": 1, "sampling": {"temperature": 0.0, "max_tokens": 2, "seed": 0}, "concurrency": 1, "timeout_s": 120.0, "prices": {}, "model_options": {}}','{"hostname": "vm", "platform": "Linux-6.18.44-fc-v1045-x86_64-with-glibc2.36", "python": "3.11.7", "cpu": "AMD EPYC", "cpu_cores": 2, "gpus": [], "versions": {"tradeoff": "0.1.0", "llama-cpp-python": "0.3.36", "httpx": "0.28.1", "pydantic": "2.14.4", "numpy": "2.4.6", "datasets": "5.2.0"}}');
CREATE TABLE sessions (
    run_id TEXT NOT NULL,
    started_at REAL NOT NULL,
    ended_at REAL,
    status TEXT
);
INSERT INTO "sessions" VALUES('bd8f3805e8a1',1.79616015914159655574e+09,NULL,NULL);
COMMIT;
