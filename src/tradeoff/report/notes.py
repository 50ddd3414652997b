"""The notes a run's figures need wherever they are shown (the terminal's tables, the report
page): a load run pooled, a run that did not finish, configurations whose every query failed."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tradeoff.resumes import how_to_continue, unfinished

if TYPE_CHECKING:
    from tradeoff.analysis.frontier import FrontierRow

LOAD_RUN_NOTE = (
    "a load run: this summary pools the measured requests of every load point (warm-up and "
    "cool-down left out); the load table gives each point, `frontier --at` one operating point"
)
POOLED_NOTE = (
    "a load run: this frontier pools the measured requests of every load point; give --at "
    "(max-goodput, concurrency=N, rate=R or a point's label) for one operating point"
)

# TPOT as `analysis.load.tpot` reads it, wherever it is defined for the user (the load table,
# --slo's help): an answer that `vote` or `cascade` released whole has none.
TPOT_DEFINITION = (
    "TPOT (e2e - TTFT) / (output tokens - 1), none for an answer released whole, every token at "
    "once (vote, cascade), which does not meet a tpot objective (one of a single token does, as "
    "any request of one token)"
)

# Answers of a server that sent no usage were counted a token a stream chunk: `analysis.costs.
# counted_in_chunks`. What it does to each figure, wherever those answers are tabled.
CHUNKS_NOTE = (
    "{counted} of {answers} answers were counted in stream chunks (the server sent no usage): a "
    "chunk may hold several tokens, so their out tok/s, decode tok/s and $/M may read low, and "
    "ITL, TPOT and the itl/tpot SLO checks high"
)


def no_records(directory: Path) -> str:
    """Why a run has nothing to report, and how to go on where it did not finish."""
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        run = store.run()
    finally:
        store.close()
    then = "" if run["status"] == "finished" else how_to_continue(run["spec"], directory)
    return (
        f"{directory} holds a run with no records yet (no query answered, or only a load run's "
        f"warm-up and cool-down); nothing to report{then}"
    )


def unfinished_note(directory: Path) -> str | None:
    """Where a run did not finish: what it holds so far (a load run: its points), which
    configurations have no record yet, and how to go on (its figures are over the items
    answered so far, which may differ between configurations)."""
    from tradeoff.store import Store

    store = Store.open(directory)
    try:
        run = store.run()
        state = unfinished(run)
        if state is None:
            return None
        points = store.load_points()
        if points:  # a load run: its points, and the one it stopped in
            ended = sum(1 for p in points if p["ended"])
            begun = {p["config_id"] for p in points}
            idle = [c["name"] for c in store.configs() if c["config_id"] not in begun]
            return (
                f"the load run {state}: {ended} of the {len(points)} load "
                f"point(s) begun ended (an unfinished one is measured again from its start)"
                + (f"; not begun: {', '.join(idle)}" if idle else "")
                + how_to_continue(run["spec"], directory)
            )
        keys = store.done_keys()
        done = {key[0] for key in keys}
        empty = [c["name"] for c in store.configs() if c["config_id"] not in done]
    finally:
        store.close()
    lacking = f"; no records yet: {', '.join(empty)}" if empty else ""
    counted = f"{len(keys):,} record{'' if len(keys) == 1 else 's'}"
    return (
        f"the run {state}: {counted}{lacking}; each configuration's figures are "
        f"over the items it answered{how_to_continue(run['spec'], directory)}"
    )


def all_failed_note(rows: Sequence[FrontierRow]) -> str | None:
    """Configurations every query of which failed: cheapest by failing at once, on the frontier,
    and worth nothing."""
    failed = [r.config for r in rows if r.n and r.errors == r.n]
    if not failed:
        return None
    return (
        f"warning: every query of {', '.join(failed)} failed; its cost is that of the failures "
        "(see the errors with tradeoff report)"
    )
