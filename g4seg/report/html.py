"""report.html: one static, offline page per run (files beside it, no CDN, no server).

Header (dataset, coarse source, strategies with their injector and refiner chain, random
weights loud), the summary table with the intervals, the plots, and a gallery of the best
and worst samples per strategy and stratum. A few lines of plain JavaScript switch the
gallery's strategy and stratum; without script every section shows. Everything comes from
run.json, metrics.json's document and the per-sample results (records), so `g4seg report` rebuilds the same page.
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from pathlib import Path

from ..evaluation.metrics import SHOWN, TITLES, class_iou, instance_ious, metric_keys
from ..evaluation.tables import CountTables
from ..files import atomic_write_bytes
from ..types import BASELINE, SampleResult
from . import per_class, winners
from .cells import gain_text, stratum_footnote, stratum_label
from .gallery import DEFAULT_GALLERY, REPORT_DIR, Shown, Thumbnails, select, stratum_names
from .palette import PALETTE
from .plots import plot_instances, plot_per_class

PAGE = "report.html"
STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1340px}
h1{margin-bottom:.2em} h2{margin-top:1.6em;border-bottom:1px solid #ccc}
.warn{background:#ffe3e3;border:2px solid #d33;padding:.6em 1em;font-weight:bold;margin:1em 0}
table{border-collapse:collapse;font-size:13px} td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}
td:first-child,td:nth-child(2),th{text-align:left} tr.all td{font-weight:bold;background:#f4f4f4}
.meta td{text-align:left} .plots img{max-width:100%;margin:.5em 0;display:block}
.controls{margin:1em 0;font-size:15px} .controls select{font-size:15px;margin-right:1em}
.row{display:flex;gap:6px;align-items:flex-start;border-bottom:1px solid #ddd;padding:6px 0;overflow-x:auto}
.cell{font-size:11px;text-align:center;width:132px;flex:none} .cell img{display:block;margin:auto;max-width:128px;cursor:zoom-in}
.rowhead{flex:none} .legend span{display:inline-block;margin:0 .8em .3em 0;font-size:12px}
.legend i{display:inline-block;width:12px;height:12px;margin-right:4px;vertical-align:-1px;border:1px solid #999}
#zoom{position:fixed;inset:0;background:rgba(0,0,0,.75);display:none;align-items:center;justify-content:center;cursor:zoom-out}
#zoom img{width:min(90vw,640px);image-rendering:auto;background:#fff}
.cell.selected{outline:3px solid #1a7f37} .rowhead{width:120px;font-size:12px}
.pos{color:#1a7f37} .neg{color:#c62828} .ious{text-align:left;white-space:nowrap}
.scroll{overflow-x:auto;max-width:100%} table.per-class td:nth-child(2){text-align:right}
#winners td.sure{font-weight:bold} #winners td.best{background:#eef6ee} #winners td.empty{color:#999}
"""
SCRIPT = """
(function(){
  var s=document.getElementById('g-strategy'), t=document.getElementById('g-stratum');
  var q=new URLSearchParams(location.hash.slice(1));  // #strategy=NAME&stratum=40-80 selects, and is kept
  function pick(sel,v){ if(v!==null && Array.prototype.some.call(sel.options,function(o){return o.value===v;})){sel.value=v;} }
  pick(s,q.get('strategy')); pick(t,q.get('stratum'));
  function show(){
    var n=0;
    document.querySelectorAll('section.gallery').forEach(function(sec){
      var on=sec.dataset.strategy===s.value && sec.dataset.stratum===t.value;
      sec.style.display=on?'':'none'; if(on){n++;}
    });
    document.getElementById('g-count').textContent=n?'':'no samples in this stratum';
  }
  function changed(){ show(); history.replaceState(null,'','#strategy='+encodeURIComponent(s.value)+'&stratum='+encodeURIComponent(t.value)); }
  s.addEventListener('change',changed); t.addEventListener('change',changed); show();
  var z=document.getElementById('zoom'), zi=z.querySelector('img');
  document.addEventListener('click',function(e){
    if(e.target.matches('.cell img')){ zi.src=e.target.src; zi.alt=e.target.alt; z.style.display='flex'; }
    else if(z.contains(e.target)){ z.style.display='none'; }
  });
  document.body.dataset.ready='1';
})();
"""


def esc(x) -> str:
    return html.escape(str(x), quote=True)


def num(x, signed: bool = False) -> str:
    if x is None or (isinstance(x, float) and x != x):
        return "n/a"
    return f"{x:+.2f}" if signed else f"{x:.2f}"


def describe(node) -> str:
    """A config object as `Class(key=value, ...)`, short."""
    if isinstance(node, dict) and "class_path" in node:
        args = ", ".join(f"{k}={json.dumps(v)}" for k, v in (node.get("init_args") or {}).items() if v is not None)
        return f"{node['class_path'].rsplit('.', 1)[-1]}({args})"
    return json.dumps(node)


def header(metrics: dict, config: dict, out_dir: Path) -> list[str]:
    data = (config.get("data") or {}).get("init_args") or {}
    model = config.get("model") or {}
    injectors = model.get("injectors") or {}
    parts = [f"<h1>g4seg run report</h1><p>{esc(out_dir.resolve())}</p>"]
    if metrics.get("random_weights"):
        parts.append(f'<div class="warn" id="random-weights">Random (untrained) weights were used by: '
                     f'{esc(", ".join(metrics["random_weights"]))}. Their numbers show the pipeline running, '
                     "not the method.</div>")  # fmt: skip
    for name, notes in metrics.get("notes", {}).items():
        for text, count in notes.items():
            parts.append(f'<div class="warn">{esc(name)}: {esc(text)} on {count} samples.</div>')
    scored = metrics["num_samples"] - metrics["num_unscored"]
    rows = [("dataset", data.get("root", "?")), ("split", data.get("split") or "all images"),
            ("classes", data.get("classes", "?")),
            ("samples", f"{metrics['num_samples']} ({scored} scored, {metrics['num_unscored']} not scored: GT all ignore)"),
            ("coarse source", describe(data.get("coarse")) if data.get("coarse") else "files / default")]  # fmt: skip
    if "bootstrap" in metrics:
        b = metrics["bootstrap"]
        rows.append(("95% CI", f"paired bootstrap over images, {b['resamples']} resamples, seed {b['seed']}"))
    parts.append('<table class="meta">' + "".join(f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in rows) + "</table>")
    parts.append("<h2>Strategies</h2><ul>")
    for spec in model.get("strategies") or []:
        chain = " &rarr; ".join(esc(describe(r)) for r in spec.get("refiners") or [])
        inj = spec.get("injector")
        inj_text = f"injector <b>{esc(inj)}</b>: {esc(describe(injectors.get(inj)))} &rarr; " if inj else ""
        random = " <b>(random weights)</b>" if spec["name"] in metrics.get("random_weights", []) else ""
        parts.append(f"<li><b>{esc(spec['name'])}</b>{random}: {inj_text}{chain}</li>")
    parts.append("</ul>")
    return parts


def summary_table(metrics: dict, shown: Sequence[str]) -> str:
    head = ["strategy", "initial IoU", "instances"]
    for m in shown:
        head += [f"{TITLES[m]} baseline", f"{TITLES[m]} refined", f"{TITLES[m]} gain [95% CI]"]
    out = ['<table id="summary"><tr>' + "".join(f"<th>{esc(h)}</th>" for h in head) + "</tr>"]
    for name, entry in metrics["strategies"].items():
        for stratum, count, e in [("all", "", entry)] + [(stratum_label(s["low"], s["high"]), s["count"], s) for s in entry["strata"]]:
            cells = [name, stratum, count]
            for m in shown:
                kb, kr, kg, kc = metric_keys(m)
                empty = count == 0
                cells += ["—" if empty else num(e[kb]), "—" if empty else num(e[kr]), gain_text(e[kg], e.get(kc), count)]
            cls = ' class="all"' if stratum == "all" else ""
            out.append(f'<tr{cls} data-strategy="{esc(name)}" data-stratum="{esc(stratum)}">'
                       + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")  # fmt: skip
    notes = "".join(f"<p>{esc(line)}</p>" for line in stratum_footnote(metrics))
    return "".join(out) + "</table>" + notes


def instance_points(results: Sequence[SampleResult], strategies: Sequence[str]) -> dict[str, list[tuple[float, float]]]:
    """(initial IoU, IoU gain) of every (image, class) instance, per strategy."""
    points: dict[str, list[tuple[float, float]]] = {name: [] for name in strategies}
    for r in results:
        if r.unscored_reason is not None:
            continue
        for c, iou in instance_ious(r.counts[BASELINE]).items():
            for name in strategies:
                points[name].append((iou, (class_iou(r.counts[name], c) or 0.0) - iou))
    return points


class Gallery:
    def __init__(self, out_dir: Path, results: Sequence[SampleResult], config: dict, strategies: Sequence[str],
                 class_names: Sequence[str], edges: Sequence[float], size: int, run_dir: Path | None = None) -> None:  # fmt: skip
        self.results = {r.id: r for r in results}
        self.thumbs = Thumbnails(out_dir, self.results, run_dir)
        self.tables = CountTables.build(results, [BASELINE, *strategies], len(class_names))
        self.masks = dict(zip(stratum_names(edges), self.tables.masks(edges)))  # once, for every strategy
        self.strategies, self.class_names, self.edges, self.size = list(strategies), class_names, list(edges), size
        spec_of = {s["name"]: s for s in (config.get("model") or {}).get("strategies") or []}
        self.injector = {name: spec_of.get(name, {}).get("injector") for name in strategies}

    def cell(self, src: str | None, caption: str, extra: str = "", selected: bool = False) -> str:
        img = f'<img src="{esc(src)}" alt="{esc(caption)}" loading="lazy">' if src else "<i>not available</i>"
        return f'<div class="cell{" selected" if selected else ""}">{img}{esc(caption)}{extra}</div>'

    def ious(self, sample_id: str, source: str) -> str:
        r = self.results[sample_id]
        lines = []
        for c in sorted(r.counts[BASELINE].union):
            before, after = class_iou(r.counts[BASELINE], c), class_iou(r.counts[source], c) or 0.0
            cls = "pos" if after > before else "neg" if after < before else ""
            lines.append(f'<div class="{cls}">{esc(self.class_names[c])}: {before:.1f}&rarr;{after:.1f}</div>')
        return f'<div class="ious">{"".join(lines)}</div>'

    def row(self, shown: Shown, strategy: str, kind: str) -> str:
        sid = shown.id
        gain_cls = "pos" if shown.gain > 0 else "neg" if shown.gain < 0 else ""
        cells = [f'<div class="rowhead"><b>{esc(sid)}</b><br>{kind}<br>'
                 f'<span class="{gain_cls}">gain {shown.gain:+.2f}</span></div>',
                 self.cell(self.thumbs.source(sid, "image"), "image"),
                 self.cell(self.thumbs.source(sid, "gt"), "ground truth"),
                 self.cell(self.thumbs.source(sid, BASELINE), "coarse")]  # fmt: skip
        for name in [strategy, *(n for n in self.strategies if n != strategy)]:  # the selected one always in view
            cells.append(self.cell(self.thumbs.source(sid, name), name, self.ious(sid, name), name == strategy))
        injector = self.injector.get(strategy)
        if injector:
            r = self.results[sid]
            for c in sorted(c for c in r.counts[BASELINE].union if c != 0):
                src = self.thumbs.generated(sid, injector, c)
                if src:
                    cells.append(self.cell(src, f"generated: {self.class_names[c]} ({injector})"))
        return f'<div class="row" data-id="{esc(sid)}">{"".join(cells)}</div>'

    def sections(self) -> str:
        out = []
        for strategy in self.strategies:
            for stratum in stratum_names(self.edges):
                best, worst = select(self.tables, strategy, self.masks[stratum], self.size)
                body = [f"<h3>{esc(strategy)}, initial IoU {esc(stratum)}: the {len(best)} largest gains</h3>"]
                body += [self.row(s, strategy, f"largest gains, #{k + 1}") for k, s in enumerate(best)]
                if worst:
                    body.append(f"<h3>the {len(worst)} smallest gains</h3>")
                    body += [self.row(s, strategy, f"smallest gains, #{k + 1}") for k, s in enumerate(worst)]
                out.append(f'<section class="gallery" data-strategy="{esc(strategy)}" data-stratum="{esc(stratum)}">'
                           + "".join(body) + "</section>")  # fmt: skip
        return "".join(out)


def opening(config: dict, strategies: Sequence[str]) -> str | None:
    """The strategy the gallery opens on: the first that is not a control (identity chain,
    no injector), whose rows would all read "gain +0.00"."""
    spec_of = {s.get("name"): s for s in (config.get("model") or {}).get("strategies") or []}
    for name in strategies:
        spec = spec_of.get(name, {})
        refiners = [str(r.get("class_path", "")) if isinstance(r, dict) else "" for r in spec.get("refiners") or []]
        if spec.get("injector") or not refiners or not all(r.endswith("Identity") for r in refiners):
            return name
    return strategies[0] if strategies else None


def legend(metrics: dict, class_names: Sequence[str]) -> str:
    """The overlay colours of the classes the run scored (the PASCAL VOC colour map)."""
    first = next(iter(metrics["strategies"].values()), {})
    index = {name: k for k, name in enumerate(class_names)}
    swatches = []
    for name in first.get("per_class", {}):
        r, g, b = PALETTE[3 * index[name]: 3 * index[name] + 3]
        swatches.append(f'<span><i style="background:rgb({r},{g},{b})"></i>{esc(name)}</span>')
    return f'<div class="legend">{"".join(swatches)}</div>'


def write_html(out_dir: Path, metrics: dict, results: Sequence[SampleResult], manifest: dict,
               shown: Sequence[str] = SHOWN, gallery: int = DEFAULT_GALLERY, run_dir: Path | None = None) -> Path:  # fmt: skip
    """Writes OUTDIR/report.html (plots and thumbnails beside it) for the run in `run_dir`
    (default: OUTDIR itself); returns its path."""
    out_dir = Path(out_dir)
    run_dir = Path(run_dir) if run_dir is not None else out_dir
    config = manifest.get("config") or {}
    strategies = list(metrics["strategies"])
    edges = [metrics["strategies"][strategies[0]]["strata"][0]["low"]] + [
        s["high"] for s in metrics["strategies"][strategies[0]]["strata"]]  # fmt: skip
    plot_per_class(metrics, out_dir / REPORT_DIR / "per_class.png")
    plot_instances(metrics, instance_points(results, strategies), edges, out_dir / REPORT_DIR / "instances.png")
    g = Gallery(out_dir, results, config, strategies, manifest["class_names"], edges, gallery, run_dir)
    sections = g.sections()
    parts = ["<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\">",
             f"<title>g4seg report: {esc(run_dir.name)}</title><style>{STYLE}</style></head><body>"]  # fmt: skip
    head = header(metrics, config, run_dir)
    at = head.index("<h2>Strategies</h2><ul>")  # the answer first, right under the run's facts
    parts += head[:at] + ["<h2>Which strategy wins where</h2>", winners.html(metrics, shown[0], esc)] + head[at:]
    parts += ["<h2>Summary</h2>", summary_table(metrics, shown)]
    parts += [f'<h2 id="per-class">{esc(per_class.TITLE)}</h2>', per_class.html(metrics, esc)]
    parts += ['<h2>Plots</h2><div class="plots">',
              '<img src="strata.png" alt="gain per stratum">',
              f'<img src="{REPORT_DIR}/per_class.png" alt="gain per class">',
              f'<img src="{REPORT_DIR}/instances.png" alt="initial IoU vs gain per instance"></div>']  # fmt: skip
    def options(values, chosen=None) -> str:
        return "".join(f'<option value="{esc(v)}"{" selected" if v == chosen else ""}>{esc(v)}</option>' for v in values)

    parts += ["<h2>Gallery</h2>",
              f"<p>Per strategy and stratum: the {gallery} samples with the largest and the {gallery} with the smallest "
              "gain (per-image mIoU, refined minus coarse, over the sample's classes in the stratum). Under each mask: "
              "IoU per class, coarse &rarr; refined. Click a thumbnail to enlarge it.</p>", legend(metrics, manifest["class_names"]),
              '<div class="controls">strategy <select id="g-strategy">' + options(strategies, opening(config, strategies))
              + "</select>"
              'initial IoU <select id="g-stratum">' + options(stratum_names(edges)) + '</select><span id="g-count"></span></div>',
              sections]  # fmt: skip
    if g.thumbs.missing_images:
        parts.append(f'<p class="warn">Images not found under the run\'s data root for {len(g.thumbs.missing_images)} '
                     "samples; their overlays are drawn on grey.</p>")  # fmt: skip
    parts += ["<h2>Configuration</h2><details><summary>resolved config (run.json)</summary><pre>",
              esc(json.dumps(config, indent=1)), "</pre></details>", '<div id="zoom"><img alt=""></div>',
              f"<script>{SCRIPT}</script></body></html>"]  # fmt: skip
    path = out_dir / PAGE
    atomic_write_bytes(path, "\n".join(parts).encode())
    return path
