"""The records table of the HTML report: per record its prompt, output, reference, score and
costs, with filters (configuration, task, failed only and wrong only where one is) and pages,
drawn by a small script from records inlined as JSON. A large run inlines a sample, and says so."""

from __future__ import annotations

import html
import json
from typing import Any

import numpy as np
import pandas as pd

from tradeoff.analysis.costs import failed as failed_records
from tradeoff.analysis.costs import imported
from tradeoff.report.vega import script_json
from tradeoff.types import DISCONNECTED

MAX_RECORDS = 2000  # records inlined; beyond, a sample (the page stays small and fast)
MAX_TEXT = 1200  # characters of a prompt, output or reference shown; the rest is cut, marked …
PAGE_SIZE = 25

# (record field, header); the script draws the table from these columns
COLUMNS = (
    ("config", "configuration"),
    ("task", "task"),
    ("item", "item #sample"),
    ("score", "score"),
    ("error", "error"),
    ("e2e_s", "e2e s"),
    ("ttft_s", "TTFT s"),
    ("output_tokens", "out tok"),
    ("energy_j", "energy J"),
    ("prompt", "prompt"),
    ("output", "output"),
    ("reference", "reference"),
)

SCRIPT = """
(function () {
  var data = JSON.parse(document.getElementById("records-data").textContent);
  var at = {}; data.columns.forEach(function (c, i) { at[c] = i; });
  var form = document.getElementById("records-filter");
  var body = document.querySelector("#records tbody");
  var info = document.getElementById("records-info");
  var page = 0, size = PAGE_SIZE, matching = data.rows;
  function failed(r) { return r[at.error] !== null && r[at.error] !== data.left; }
  function wrong(r) { return !failed(r) && r[at.score] !== null && r[at.score] < 1; }
  function keep(r) {
    return (!form.config.value || r[at.config] === form.config.value)
      && (!form.task.value || r[at.task] === form.task.value)
      && (!form.load_point || !form.load_point.value || r[at.load_point] === form.load_point.value)
      && (!form.failed || !form.failed.checked || failed(r))
      && (!form.wrong || !form.wrong.checked || wrong(r));
  }
  function cell(value, cls) {
    var td = document.createElement("td");
    td.textContent = value === null ? "-" : String(value);
    if (cls) td.className = cls;
    return td;
  }
  function draw() {
    body.textContent = "";
    var first = page * size, rows = matching.slice(first, first + size);
    rows.forEach(function (r) {
      var tr = document.createElement("tr");
      if (failed(r)) tr.className = "failed"; else if (wrong(r)) tr.className = "wrong";
      data.columns.forEach(function (c, i) {
        var cls = data.text.indexOf(c) >= 0 ? "text long"
          : data.names.indexOf(c) >= 0 ? "text" : "";
        tr.appendChild(cell(r[i], cls));
      });
      body.appendChild(tr);
    });
    var shown = matching.length ? (first + 1) + "-" + (first + rows.length) : "0";
    info.textContent = shown + " of " + matching.length + " matching records" + data.of;
    form.prev.disabled = page === 0;
    form.next.disabled = first + size >= matching.length;
  }
  function filter() { matching = data.rows.filter(keep); page = 0; draw(); }
  form.addEventListener("change", filter);
  form.prev.addEventListener("click", function () { page -= 1; draw(); });
  form.next.addEventListener("click", function () { page += 1; draw(); });
  filter();
})();
""".replace("PAGE_SIZE", str(PAGE_SIZE))


def _text(value: Any) -> str | None:
    """A prompt (text, or chat messages), an output or a reference as text, cut at MAX_TEXT."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    if isinstance(value, list):  # chat messages
        value = "\n".join(f"{m.get('role', '?')}: {m.get('content', '')}" for m in value)
    text = value if isinstance(value, str) else json.dumps(value)
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + " …"


def sample(records: pd.DataFrame, limit: int = MAX_RECORDS, seed: int = 0) -> pd.DataFrame:
    """All records up to `limit`; beyond, as many from each configuration (`_share`: one with
    fewer gives all its own, what it leaves going to the others), its failed and wrong ones first
    (up to half of its share), drawn at random, in the run's order."""
    if len(records) <= limit:
        return records
    rng = np.random.default_rng(seed)
    groups = records.groupby("config", sort=False, observed=True)
    each = _share([len(group) for _, group in groups], limit)
    picked: list[np.ndarray] = []
    for _, group in groups:
        bad = (group["error"].notna() | (group["score"].fillna(1.0) < 1)).to_numpy()
        index = group.index.to_numpy()
        worse = rng.permutation(index[bad])[: each // 2]
        rest = rng.permutation(np.setdiff1d(index, worse))[: each - len(worse)]
        picked += [worse, rest]
    return records.loc[np.sort(np.concatenate(picked))]


def _share(counts: list[int], limit: int) -> int:
    """How many records `sample` takes from each configuration of `counts` records: `limit`
    shared alike, a configuration with fewer than its share giving what it leaves to the others
    (a load run's slow configuration, a run stopped part-way); at least 1."""
    left, others = limit, len(counts)
    for count in sorted(counts):
        each = max(1, left // others)
        if count > each:
            return each
        left, others = left - count, others - 1
    return max(counts)  # every configuration is whole


def _sampled(shown: pd.DataFrame, records: pd.DataFrame, names: list[str]) -> str:
    """What a `sample` holds of each configuration: all its records, or its share."""
    counts = records.groupby("config", observed=True).size()
    kept = shown.groupby("config", observed=True).size().reindex(counts.index, fill_value=0)
    whole = [name for name in names if name in counts.index and kept[name] == counts[name]]
    each, drawn = kept[kept < counts].min(), "its failed and wrong ones first"
    if not whole:
        return f"{each:,} of each configuration's records, {drawn}"
    return f"all the records of {', '.join(whole)}; {each:,} of each other configuration's, {drawn}"


def records_section(
    shown: pd.DataFrame,
    records: pd.DataFrame,
    texts: pd.DataFrame,
    items: pd.DataFrame,
    names: list[str],
    unmeasured: int = 0,
) -> str:
    """The section: filters, a page of the table, the `shown` records (`sample` of the run's
    measured `records`) inlined as JSON with their outputs (`texts`: the records of their items,
    with `output`), and their items' prompts and references (`items`: `Store.items()`);
    `unmeasured`: the warm-up and cool-down records left out."""
    key = ["config", "task", "item_id", "sample", "load_point"]
    outputs = texts.drop_duplicates(key).set_index(key)["output"]
    outputs = outputs.reindex(pd.MultiIndex.from_frame(shown[key])).tolist()
    items = items.drop_duplicates(["task", "item_id"]).set_index(["task", "item_id"])
    keys = pd.MultiIndex.from_frame(shown[["task", "item_id"]])
    prompts = items["prompt"].reindex(keys).tolist()
    references = items["reference"].reindex(keys).tolist()
    timed = (~imported(shown)).tolist()  # imported outcomes store 0 s and 0 tokens: not measured
    # A load run answers an item at each load point: the point tells its records apart.
    pointed = bool((records["load_point"].fillna("") != "").any())
    columns = [*COLUMNS[:2], ("load_point", "load point"), *COLUMNS[2:]] if pointed else COLUMNS
    rows = []
    for i, r in enumerate(shown.itertuples(index=False)):
        rows.append(
            [
                r.config,
                r.task,
                *([r.load_point] if pointed else []),
                f"{r.item_id} #{r.sample}",
                None if pd.isna(r.score) else round(float(r.score), 4),
                None if pd.isna(r.error) else str(r.error),
                _round(r.e2e_s) if timed[i] else None,
                _round(r.ttft_s) if timed[i] else None,
                None if pd.isna(r.output_tokens) or not timed[i] else int(r.output_tokens),
                _round(r.energy_j),
                _text(prompts[i]),
                _text(outputs[i]),
                _text(references[i]),
            ]
        )
    whole = len(records)
    measured = f"{whole:,} measured records" if unmeasured else f"{whole:,} records"
    left = f"; {unmeasured:,} of warm-up and cool-down left out" if unmeasured else ""
    of = (
        f" (all {measured} of the run{left})"
        if len(shown) == whole
        else f" (a sample of {len(shown):,} of the run's {measured}{left}: "
        f"{_sampled(shown, records, names)}; `tradeoff report DIR --records` lists them all)"
    )
    data = {
        "columns": [c for c, _ in columns],
        "text": ["prompt", "output", "reference", "error"],
        "names": ["config", "task", "load_point", "item"],
        "rows": rows,
        "of": of,
        "left": DISCONNECTED,  # a served client gone: no failure (`analysis.costs.failed`)
    }
    payload = script_json(data, allow_nan=False)
    configs = [n for n in names if n in set(shown["config"])]
    tasks = list(dict.fromkeys(shown["task"]))
    points = list(dict.fromkeys(shown["load_point"])) if pointed else []
    head = "".join(f"<th>{html.escape(h)}</th>" for _, h in columns)
    # a filter that could only find nothing is not offered
    failed = (
        '<label><input type="checkbox" name="failed"> failed only</label>'
        if failed_records(records).any()
        else "<span>no record failed</span>"
    )
    scored = records["score"].notna()
    wrong = (
        '<label><input type="checkbox" name="wrong"> wrong only</label>'
        if (scored & (records["score"] < 1) & records["error"].isna()).any()
        else f"<span>{'no record was wrong' if scored.any() else 'no record is scored'}</span>"
    )
    return (
        "<h2>Records</h2>"
        '<form id="records-filter" class="filters">'
        + _select("config", "configuration", configs)
        + _select("task", "task", tasks)
        + (_select("load_point", "load point", points) if pointed else "")
        + failed
        + wrong
        + '<button type="button" name="prev">previous</button>'
        '<button type="button" name="next">next</button>'
        '<span id="records-info"></span></form>'
        f'<div class="scroll"><table id="records"><thead><tr>{head}</tr></thead>'
        "<tbody></tbody></table></div>"
        f'<script type="application/json" id="records-data">{payload}</script>'
        f"<script>{SCRIPT}</script>"
    )


def _round(value: Any) -> float | None:
    return None if value is None or pd.isna(value) else float(f"{float(value):.4g}")


def _select(name: str, label: str, options: list[str]) -> str:
    # The value as given: an option's text is read with its runs of spaces collapsed.
    choices = "".join(
        f'<option value="{html.escape(o)}">{html.escape(o)}</option>' for o in options
    )
    return (
        f'<label>{html.escape(label)} <select name="{name}">'
        f'<option value="">all</option>{choices}</select></label>'
    )
