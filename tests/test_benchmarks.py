"""The scripts under benchmarks/ at their smallest settings: what they print about a run, not the
figures they measure (those are RESULTS.md's, on a quiet machine)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from conftest import REPO

BENCHMARKS = REPO / "benchmarks"


@pytest.fixture
def benchmarks_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The scripts import their neighbours (section, bench_router_features) as top-level
    modules, as they do when run from benchmarks/."""
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    yield


def test_bench_routers_draws_every_question_of_a_cut_smaller_than_its_samples(
    benchmarks_importable: None,
) -> None:
    """A cut of fewer than 50 questions (--subjects 2 --limit 10) crashed in numpy before it
    measured anything: the encoder's check drew 50 prompts without replacement."""
    from bench_routers import draw

    check, single = draw(20)
    assert sorted(check) == list(range(20))
    assert sorted(single) == list(range(20))
