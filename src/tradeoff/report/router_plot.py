"""Router curves (accuracy against the share of calls to the strong configuration) as a PNG, or
as one self-contained HTML file with the PNG inlined and the metrics beside it (works offline)."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

from tradeoff.policy.evaluate import Evaluation

_STYLE = {"router": ("C0", "-"), "oracle": ("C2", "--"), "random": ("0.5", ":")}


def _png(result: Evaluation) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for r in result.routers:
        color, style = _STYLE.get(r.label, ("C1", "-"))
        ax.plot(
            100 * r.curve.strong_fraction,
            r.curve.accuracy,
            style,
            color=color,
            marker="o" if r.label == "router" else None,
            ms=3,
            label=f"{r.label} (APGR {r.apgr:.2f})",
        )
    ax.axhline(result.acc_weak, color="0.8", lw=0.8)
    ax.axhline(result.acc_strong, color="0.8", lw=0.8)
    ax.set_xlabel(f"% of calls to the strong configuration ({result.strong})")
    ax.set_ylabel("accuracy (mean score)")
    ax.set_title(
        f"{result.weak} → {result.strong}, {result.items} items, {result.source}", fontsize=9
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def plot_router(result: Evaluation, path: str | Path) -> Path:
    """Write the curves to `path` (.png, or .html with the image and a metrics table inlined)."""
    path = Path(path)
    png = _png(result)
    if path.suffix.lower() == ".png":
        path.write_bytes(png)
        return path
    pct = lambda v: "n/a" if v != v else f"{100 * v:.1f}%"  # noqa: E731
    rows = "".join(
        f"<tr><td>{html.escape(r.label)}</td><td>{r.auc:.3f}</td><td>{r.apgr:.3f}</td>"
        f"<td>{pct(r.cpt50)}</td><td>{pct(r.cpt80)}</td><td>{pct(r.cost_saved_95)}</td></tr>"
        for r in result.routers
    )
    image = base64.b64encode(png).decode()
    path.write_text(
        "<!doctype html><meta charset='utf-8'><title>tradeoff router evaluation</title>"
        "<style>body{font-family:sans-serif;margin:2em}td,th{padding:2px 10px;text-align:right}"
        "td:first-child{text-align:left}</style>"
        f"<h1>Router: {html.escape(result.weak)} → {html.escape(result.strong)}</h1>"
        f"<p>{result.items} items, {html.escape(result.source)}; accuracy weak "
        f"{result.acc_weak:.3f}, strong {result.acc_strong:.3f}; cost axis "
        f"{html.escape(result.cost_axis)}</p>"
        f"<img alt='router curves' src='data:image/png;base64,{image}'>"
        "<table><tr><th>router</th><th>AUC</th><th>APGR</th><th>CPT(50%)</th><th>CPT(80%)</th>"
        f"<th>cost saved at 95%</th></tr>{rows}</table>"
    )
    return path
