"""The answer to the question the tool exists for: which strategy wins in which stratum of
input quality, by how much, and whether that is more than the luck of the images.

Rows are "all" and the strata, columns the strategies (the Identity control left out),
each cell the gain of one metric with its 95% CI. In the terminal a cell is marked `*`
when its interval excludes 0, and the best strategy of each row (the largest gain) `<`;
on the page the same cells are coloured by sign and bold where the interval excludes 0.
"""

from __future__ import annotations

import math
import textwrap

from ..evaluation.metrics import MIN_INSTANCES, TITLES, metric_keys
from .cells import FEW, stratum_label

WIDTH = 100
ALL_NOTE = ("\"all\" is computed over the pixels of all images (each class's I and U summed over "
            "images), not averaged over the strata, so it can differ from every stratum's gain.")  # fmt: skip


def contenders(metrics: dict) -> list[str]:
    """The strategies compared (the Identity control, whose gain is 0 by design, left out
    when anything else is there)."""
    names = list(metrics["strategies"])
    others = [n for n in names if n != "identity"]
    return others or names


def cell(entry: dict, metric: str) -> dict:
    """gain, ci, whether the CI excludes 0, and the stratum's instance count (None for "all")."""
    _, _, kg, kc = metric_keys(metric)
    gain, ci = entry.get(kg), entry.get(kc)
    count = entry.get("count")
    known = gain is not None and not (isinstance(gain, float) and math.isnan(gain)) and count != 0
    sure = bool(known and ci and (ci[0] > 0 or ci[1] < 0) and (count is None or count >= MIN_INSTANCES))
    return {"gain": gain if known else None, "ci": ci if known else None, "sure": sure, "count": count}


def grid(metrics: dict, metric: str) -> tuple[list[str], list[str], list[list[dict]]]:
    """(row labels, strategies, cells[row][strategy]); each row's best strategy flagged."""
    names = contenders(metrics)
    first = metrics["strategies"][names[0]]
    labels = ["all"] + [f"{stratum_label(s['low'], s['high'])} (n={s['count']})" for s in first["strata"]]
    rows = []
    for r in range(len(labels)):
        cells = []
        for name in names:
            m = metrics["strategies"][name]
            cells.append(cell(m if r == 0 else m["strata"][r - 1], metric))
        gains = [c["gain"] for c in cells if c["gain"] is not None]
        best = max(gains) if gains and len(names) > 1 else None
        for c in cells:
            c["best"] = best is not None and c["gain"] == best
        rows.append(cells)
    return labels, names, rows


def terminal(metrics: dict, metric: str = "miou") -> str:
    """The winners view for the terminal, within 100 columns (strategies beyond that go to
    further blocks)."""
    labels, names, rows = grid(metrics, metric)
    label_w = max(len(x) for x in labels) + 1
    col_w = max(12, *(len(n) + 1 for n in names))
    per_block = max(1, (WIDTH - label_w) // col_w)
    lines = [f"Which strategy wins where: {TITLES[metric]} gain over the coarse mask (points)"]
    for start in range(0, len(names), per_block):
        block = names[start : start + per_block]
        lines.append("".join([" " * label_w] + [n.rjust(col_w) for n in block]))
        for label, cells in zip(labels, rows):
            texts = []
            for c in cells[start : start + per_block]:
                if c["gain"] is None:
                    text = "—"
                else:
                    few = c["count"] is not None and c["count"] < MIN_INSTANCES
                    text = f"{c['gain']:+.2f}" + ("*" if c["sure"] else "") + (FEW if few else "") + ("<" if c["best"] else "")
                texts.append(text.rjust(col_w))
            lines.append(label.ljust(label_w) + "".join(texts))
        lines.append("")
    sure = "* 95% CI excludes 0   " if metrics.get("bootstrap") else ""  # without resamples no cell has a CI
    lines.append(f"{sure}< best in the row   {FEW} fewer than {MIN_INSTANCES} instances   — empty stratum")
    lines.append(textwrap.fill(ALL_NOTE, WIDTH))
    return "\n".join(lines) + "\n"


def html(metrics: dict, metric: str, esc) -> str:
    """The same view for report.html: green/red by sign, bold where the CI excludes 0."""
    labels, names, rows = grid(metrics, metric)
    out = [f'<table id="winners" data-metric="{esc(metric)}"><tr><th>initial IoU</th>'
           + "".join(f"<th>{esc(n)}</th>" for n in names) + "</tr>"]  # fmt: skip
    for label, cells in zip(labels, rows):
        tds = []
        for c in cells:
            if c["gain"] is None:
                tds.append('<td class="empty">—</td>')
                continue
            cls = " ".join(x for x in ("pos" if c["gain"] > 0 else "neg" if c["gain"] < 0 else "",
                                       "sure" if c["sure"] else "", "best" if c["best"] else "") if x)  # fmt: skip
            ci = f" [{c['ci'][0]:+.2f}, {c['ci'][1]:+.2f}]" if c["ci"] else ""
            few = f" {FEW}" if c["count"] is not None and c["count"] < MIN_INSTANCES else ""
            tds.append(f'<td class="{cls}">{c["gain"]:+.2f}{esc(ci)}{few}{" &#9664;" if c["best"] else ""}</td>')
        out.append(f"<tr><td>{esc(label)}</td>{''.join(tds)}</tr>")
    ci = ", [95% CI]. Bold: the CI excludes 0" if metrics.get("bootstrap") else " (no confidence intervals)"
    legend = (f"<p>{TITLES[metric]} gain over the coarse mask, points{ci}; &#9664;: "
              f"best in the row; {FEW}: fewer than {MIN_INSTANCES} instances. {esc(ALL_NOTE)}</p>")  # fmt: skip
    return "".join(out) + "</table>" + legend
