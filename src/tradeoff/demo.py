"""The embedded default: both bundled models on every built-in task, alone and combined by
vote, cascade and switch; no network, no GPU."""

from __future__ import annotations

from tradeoff.config import FLAGS_SOURCE, RunSpec, parse_spec
from tradeoff.errors import UserError


def demo_spec(limit: int = 20) -> RunSpec:
    from tradeoff.tasks import builtin_tasks

    return parse_spec(
        {
            "models": {"smollm2-135m": "smollm2-135m", "gemma3-270m": "gemma3-270m"},
            "tasks": [t.name for t in builtin_tasks()],
            "limit": limit,
            "sampling": {"temperature": 0.0, "max_tokens": 48, "seed": 0},
            "configs": [
                {"model": "smollm2-135m"},
                {"model": "gemma3-270m"},
                {"strategy": "vote", "model": "smollm2-135m", "n": 3, "adaptive": True},
                {
                    "strategy": "cascade",
                    "models": ["smollm2-135m", "gemma3-270m"],
                    "signal": "logprob",
                    "threshold": 0.5,
                },
                {
                    "strategy": "switch",
                    "models": ["smollm2-135m", "gemma3-270m"],
                    "threshold": 1.5,
                },
            ],
        },
        FLAGS_SOURCE,  # its one field a user sets is --limit
    )


def is_demo(spec: object) -> bool:
    """Whether a run's stored spec is one `tradeoff demo` ran (it continues with `tradeoff demo
    --resume`, which writes its page too)."""
    if not isinstance(spec, dict) or type(spec.get("limit")) is not int:
        return False
    try:
        stored = parse_spec(spec, "the stored spec").model_dump(mode="json")
    except UserError:
        return False
    return bool(stored == demo_spec(spec["limit"]).model_dump(mode="json"))
