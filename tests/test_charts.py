"""The charts of `tradeoff.report.charts` as vl-convert draws them (the SVG scene its PNG is
rasterised from, no browser): what a reader of a `--plot X.png` sees on its axes."""

from __future__ import annotations

import re

import pytest
import vl_convert

from tradeoff.analysis.frontier import FrontierRow, _mark_pareto
from tradeoff.report import vega
from tradeoff.report.charts import frontier_chart

# Widths of the characters of an axis label at the axes' 11 px (Arial/Liberation Sans, in em):
# enough to tell labels that touch from labels with room between them.
EM = {".": 0.278, "-": 0.333, "e": 0.556, "+": 0.584}


def _row(config: str, cost: float, accuracy: float) -> FrontierRow:
    return FrontierRow(
        config=config, n=300, n_scored=300, accuracy=accuracy, accuracy_low=accuracy - 0.05,
        accuracy_high=accuracy + 0.05, cost_axis="given", cost_unit="USD", cost=cost,
        cost_source="given with the imported outcomes", cost_missing=None, cost_note=None,
        cost_of_pass=cost / accuracy, energy_j=None, energy_source=None,
        energy_missing="not metered", accuracy_per_joule=None, power_w=None, ipw=None,
        output_tokens=None, e3=None, errors=0, pareto=False, dominated_by=None,
    )  # fmt: skip


def _frontier(costs: list[float]) -> list[FrontierRow]:
    rows = [_row(f"m{i}", cost, 0.2 + 0.2 * i) for i, cost in enumerate(costs)]
    _mark_pareto(rows)
    return rows


def x_labels(chart) -> list[tuple[float, float, str]]:
    """The x axis's labels as drawn: (left end, right end, text), left to right."""
    svg = vl_convert.vegalite_to_svg(vega.spec_of(chart))
    groups = re.findall(r'role-axis-label".*?</g>', svg, re.S)
    found = []
    for group in groups:
        texts = [
            (tag, *re.findall(r'transform="translate\(([-\d.]+),([-\d.]+)\)"', tag)[0], text)
            for tag, text in re.findall(r"<text([^>]*)>([^<]*)</text>", group)
        ]
        if len({y for _, _, y, _ in texts}) == 1 and len(texts) > 1:  # one row: the x axis
            for attributes, x, _, text in texts:
                if 'opacity="0"' in attributes:  # thinned out: not drawn
                    continue
                width = 11 * sum(EM.get(c, 0.556) for c in text)
                anchor = re.search(r'text-anchor="(\w+)"', attributes)
                left = {"start": 0.0, "end": width}.get(
                    anchor.group(1) if anchor else "", width / 2
                )
                found.append((float(x) - left, float(x) - left + width, text))
    assert found, "no x axis labels found"
    return sorted(found)


@pytest.mark.parametrize(
    "costs",
    [[1.3e-6, 1.7e-6, 7.5e-6], [0.0, 0.0]],
    ids=["dollars-per-query", "all-zero"],
)
def test_the_frontier_png_keeps_its_cost_labels_apart(costs):
    """Dollars per query (1.3e-6) were labelled "0.00000100.00000150.0000020…", one unreadable
    string: touching labels were not thinned out. Costs all 0 read "0.000.05"."""
    labels = x_labels(frontier_chart({"cost": _frontier(costs)}, []))
    assert len(labels) >= 3, labels
    for (_, end, text), (start, _, after) in zip(labels, labels[1:]):
        assert start - end >= 8, f"{text!r} and {after!r} run together: {labels}"
    assert all(len(text) <= 7 for _, _, text in labels), labels


def legend_texts(chart) -> list[str]:
    """Every line of the chart's legends as drawn: titles and entries."""
    svg = vl_convert.vegalite_to_svg(vega.spec_of(chart))
    groups = re.findall(r'role-legend-(?:title|label)".*?</g>', svg, re.S)
    return [
        line
        for group in groups
        for text in re.findall(r"<text[^>]*>(.*?)</text>", group)
        for line in re.split(r"<tspan[^>]*>|</tspan>", text)
        if line
    ]


def test_every_configuration_of_many_is_in_the_legend_and_repeated_colours_are_said():
    """40 configurations: the legend stopped at 29, then "…11 entries"; configurations 20 on
    had the colours of the first 20, and nothing said so."""
    rows = [_row(f"model{i}", i + 1.0, (i + 1) / 41) for i in range(40)]
    _mark_pareto(rows)
    texts = legend_texts(frontier_chart({"cost": rows}, [r.config for r in rows]))
    assert [t for t in texts if t.startswith("model")] == [r.config for r in rows], texts
    assert not any("entries" in t for t in texts), texts
    assert "(colours repeat past 20:" in texts, texts


def test_twenty_configurations_have_twenty_colours_and_no_note():
    rows = [_row(f"model{i}", i + 1.0, (i + 1) / 21) for i in range(20)]
    _mark_pareto(rows)
    spec = vega.spec_of(frontier_chart({"cost": rows}, [r.config for r in rows]))
    colour = spec["layer"][0]["encoding"]["color"]
    assert len(set(colour["scale"]["range"])) == 20
    assert colour["legend"].get("title", colour["title"]) == "configuration"
