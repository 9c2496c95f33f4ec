"""The per-class table: IoU of the coarse masks and of each strategy, per class, over all
images (the `per_class` entries of metrics.json). A mean hides which classes a refiner
helps; this shows them, for summary.md and the page alike."""

from __future__ import annotations

from collections.abc import Callable

TITLE = "Per class: IoU over all images, coarse and refined (gain)"


def table(metrics: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of plain-text cells: class, coarse IoU, then each strategy's refined
    IoU with its gain; classes in dataset order, those scored in no image left out."""
    names = list(metrics["strategies"])
    per = {name: metrics["strategies"][name].get("per_class", {}) for name in names}
    classes = list(per[names[0]]) if names else []
    rows = []
    for c in classes:
        coarse = per[names[0]][c]["iou_baseline"]
        cells = [c, f"{coarse:.2f}"]
        for name in names:
            refined = per[name].get(c, {}).get("iou_refined")
            cells.append("—" if refined is None else f"{refined:.2f} ({refined - coarse:+.2f})")
        rows.append(cells)
    return ["class", "coarse", *names], rows


def markdown(metrics: dict) -> str:
    head, rows = table(metrics)
    lines = [TITLE, "", "| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def html(metrics: dict, esc: Callable[[object], str]) -> str:
    head, rows = table(metrics)
    sign = lambda cell: " class=\"pos\"" if "(+" in cell and "(+0.00)" not in cell else (  # noqa: E731
        " class=\"neg\"" if "(-" in cell and "(-0.00)" not in cell else "")
    out = ['<div class="scroll"><table class="per-class"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for r in rows:
        out.append("<tr>" + "".join(f"<td{sign(cell) if k > 1 else ''}>{esc(cell)}</td>" for k, cell in enumerate(r))
                   + "</tr>")  # fmt: skip
    return "\n".join([*out, "</table></div>"])
