"""report.html: parsed (images exist, table = metrics.json, gallery order = gains computed
here from the records), rebuilt identically by `g4seg report`, and rendered by a real
browser (headless chromium)."""

from __future__ import annotations

import json
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import cli, demo_with, finished_run, read_metrics

GALLERY = 2


class Page(HTMLParser):
    """The page's images, summary rows and gallery sections with their sample ids."""

    def __init__(self) -> None:
        super().__init__()
        self.images: list[str] = []
        self.rows: list[list[str]] = []
        self.sections: dict[tuple[str, str], list[str]] = {}
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_summary = False
        self._section: tuple[str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "img" and "src" in a:  # the enlarged view's img gets its src on click
            self.images.append(a["src"])
        elif tag == "table" and a.get("id") == "summary":
            self._in_summary = True
        elif tag == "tr" and self._in_summary and "data-strategy" in a:
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "section" and a.get("class") == "gallery":
            self._section = (a["data-strategy"], a["data-stratum"])
            self.sections[self._section] = []
        elif tag == "div" and a.get("class") == "row" and self._section is not None:
            self.sections[self._section].append(a["data-id"])

    def handle_endtag(self, tag):
        if tag == "td" and self._cell is not None:
            self._row.append("".join(self._cell))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None
        elif tag == "table":
            self._in_summary = False
        elif tag == "section":
            self._section = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("html") / "run"
    # the demo's strategies but the slowest refiners on CPU (SAM, SegRefiner): the page is the same kind
    config = demo_with(out.parent, "identity", "densecrf", "cascadepsp", "g4seg_emi", "g4seg_emi+crf", "g4seg_controlnet")
    finished_run(out, "predict", "--config", config, "--data.init_args.limit", "5",
                 "--save_generated", "true", "--scoring.gallery", str(GALLERY), "--scoring.bootstrap", "200")  # fmt: skip
    return out


def parse(out: Path) -> Page:
    page = Page()
    page.feed((out / "report.html").read_text())
    return page


def test_page_references_existing_files_and_shows_metrics_json(run):
    page = parse(run)
    assert page.images and all((run / src).is_file() for src in page.images)
    assert any("/generated/" in src for src in page.images)  # the injectors' images, saved by the run
    metrics = read_metrics(run)
    expected = []
    for name, m in metrics["strategies"].items():
        for stratum, e in [("all", m)] + [(f"{s['low']:g}-{s['high']:g}", s) for s in m["strata"]]:
            row = [name, stratum]
            for base, ref, gain, ci in (("miou_baseline", "miou_refined", "gain", "ci95"),
                                        ("boundary_iou_baseline", "boundary_iou_refined", "boundary_iou_gain", "boundary_iou_ci95"),
                                        ("mba_baseline", "mba_refined", "mba_gain", "mba_ci95")):  # fmt: skip
                count = e.get("count")
                if count == 0:  # an empty stratum is shown empty
                    row += ["—", "—", "—"]
                    continue
                flag = " †" if count is not None and count < 5 else ""  # too few instances to read as a result
                row += [f"{e[base]:.2f}", f"{e[ref]:.2f}", f"{e[gain]:+.2f} [{e[ci][0]:+.2f}, {e[ci][1]:+.2f}]{flag}"]
            expected.append(row)
    assert [[r[0], r[1], *r[3:]] for r in page.rows] == expected


def gains_from_records(out: Path, strategy: str) -> list[tuple[str, float]]:
    """Per-image mIoU gain over each sample's classes, from the records, highest first."""
    ranked = []
    for path in sorted((out / "records").glob("*.json")):
        r = json.loads(path.read_text())
        base, ref = r["counts"]["baseline"], r["counts"][strategy]
        b = [base["inter"].get(c, 0) / u for c, u in base["union"].items() if u]
        f = [ref["inter"].get(c, 0) / ref["union"][c] for c in base["union"] if ref["union"].get(c)]
        ranked.append((r["id"], 100 * (np.mean(f) - np.mean(b))))
    return sorted(ranked, key=lambda x: (-x[1], x[0]))


def test_gallery_lists_best_then_worst_in_gain_order(run):
    page = parse(run)
    metrics = read_metrics(run)
    for strategy in metrics["strategies"]:
        ranked = [i for i, _ in gains_from_records(run, strategy)]
        assert page.sections[(strategy, "all")] == ranked[:GALLERY] + ranked[::-1][:GALLERY]
        assert set(page.sections) >= {(strategy, s) for s in ("all", "0-40", "40-80", "80-100")}


def test_report_rebuilds_the_same_page_without_overwriting_it(run, tmp_path):
    """`g4seg report` on a finished run writes a new folder (the run's own page stays), and
    the page it writes is the run's page, byte for byte, thumbnails included."""
    before = (run / "report.html").read_bytes()
    code, out, err = cli("report", str(run))
    assert code == 0, err
    new = run / "reports" / "1"
    assert f"report: {(new / 'report.html').resolve()}" in out
    assert (new / "report.html").read_bytes() == before == (run / "report.html").read_bytes()
    thumbs = sorted(p.relative_to(run / "report") for p in (run / "report").rglob("*.jpg"))
    assert thumbs and thumbs == sorted(p.relative_to(new / "report") for p in (new / "report").rglob("*.jpg"))
    code, out, err = cli("report", str(run), "--output", str(new))
    assert code == 2 and "--output must be a new or empty folder (a report is never overwritten)" in err
    code, out, err = cli("report", str(run), "--in-place")
    assert code == 0 and f"report: {(run / 'report.html').resolve()}" in out


def chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    if shutil.which("apt-get"):  # Debian's package, ~20 s; a fresh machine may need its package lists first
        for command in (["apt-get", "install", "-y", "-q", "chromium"], ["apt-get", "update", "-q"],
                        ["apt-get", "install", "-y", "-q", "chromium"]):  # fmt: skip
            if subprocess.run(command, capture_output=True, timeout=600).returncode == 0 and shutil.which("chromium"):
                break
    return shutil.which("chromium")


def test_a_real_browser_renders_the_page(run, tmp_path):
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install chromium` failed (no root or no package source)")
    url = (run / "report.html").resolve().as_uri()
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--enable-logging=stderr",
             "--v=0", "--virtual-time-budget=5000"]  # fmt: skip
    shot = tmp_path / "shot.png"
    proc = subprocess.run([*flags, "--window-size=1200,1600", f"--screenshot={shot}", url],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert shot.is_file(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.std() > 20  # text, tables and plots, not a blank page
    assert "Uncaught" not in proc.stderr, proc.stderr[-2000:]
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert 'data-ready="1"' in dom.stdout  # the gallery script ran
    assert "Uncaught" not in dom.stderr, dom.stderr[-2000:]
    page = Page()
    page.feed(dom.stdout)
    metrics = read_metrics(run)
    opening = next(name for name in metrics["strategies"] if name != "identity")  # not the control: all +0.00
    assert page.sections[(opening, "all")]  # gallery rows in the rendered DOM
    # after the script, only the selected section (first non-control strategy, all) is displayed
    assert displayed_sections(dom.stdout) == [(opening, "all")]
    # a link selects a strategy and stratum
    linked = subprocess.run([*flags, "--dump-dom", f"{url}#strategy=identity&stratum=40-80"], capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert displayed_sections(linked.stdout) == [("identity", "40-80")]


def displayed_sections(dom: str) -> list[tuple[str, str]]:
    heads = [part.split(">")[0] for part in dom.split("<section")[1:]]
    shown = [h for h in heads if 'style="display: none;"' not in h]
    return [(h.split('data-strategy="')[1].split('"')[0], h.split('data-stratum="')[1].split('"')[0]) for h in shown]


MEASURE = """<script>
var sec=[].slice.call(document.querySelectorAll('section.gallery')).filter(function(s){return s.style.display!=='none';})[0];
var r=sec.querySelector('.cell.selected').getBoundingClientRect();
document.body.dataset.selectedRight=Math.round(r.right);
document.body.dataset.pageWidth=document.documentElement.scrollWidth;
</script></body>"""


def test_at_1400_pixels_the_page_fits_and_the_selected_strategy_is_in_view(run, tmp_path):
    """The demo page in Chromium at 1,400 px: no horizontal page scroll, and the selected
    strategy's thumbnail lies inside the window in the gallery (the page is measured
    from a copy with a measuring script appended; the page itself is unchanged)."""
    browser = chromium()
    if browser is None:
        pytest.skip("chromium is not installed and `apt-get install chromium` failed (no root or no package source)")
    copy = run / "measure.html"
    copy.write_text((run / "report.html").read_text().replace("</body>", MEASURE))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1400,900",
             "--virtual-time-budget=5000"]  # fmt: skip
    try:
        names = list(read_metrics(run)["strategies"])
        for strategy in (names[0], names[-1]):  # the last was the farthest right before the selected one came first
            dom = subprocess.run([*flags, "--dump-dom", f"{copy.resolve().as_uri()}#strategy={strategy}&stratum=all"],
                                 capture_output=True, text=True, timeout=120).stdout  # fmt: skip
            right = int(dom.split('data-selected-right="')[1].split('"')[0])
            width = int(dom.split('data-page-width="')[1].split('"')[0])
            assert width <= 1400 and right <= 1400, (strategy, width, right)
    finally:
        copy.unlink()
