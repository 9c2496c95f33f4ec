"""Where the numbers come from: at the end of a run (and in `g4seg report`), the run
folder's records are summarised (`evaluation.summary`) and the report is written.

Every process has written its records when the epoch ends; after a barrier, the main
process reads them (the ones the run folder loaded at its claim are not read again) and
computes every metric from them (`hooks.Scoring`). DDP, resume and a later `g4seg report`
therefore see the same records and print the same numbers. Nothing here imports Lightning
or torch, so `g4seg report` starts at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..errors import RunFolderError
from ..evaluation.metrics import check_edges
from ..evaluation.summary import summarize
from ..report.write import ReportSettings, write_report
from .folder import RunFolder


def score(folder: RunFolder, settings: ReportSettings, edges: Sequence[float] | None = None,
          out: Path | None = None) -> tuple[dict, str]:  # fmt: skip
    """(metrics document, markdown table) of the folder's records; writes the report into
    `out` (default: the run folder itself)."""
    manifest = folder.manifest or {}
    results = folder.results()
    if not results:
        raise RunFolderError(f"{folder.path}: no per-sample records yet")
    edges = check_edges(edges, "--edges") if edges else manifest["strata_edges"]
    document = summarize(results, manifest["strategies"], manifest["class_names"], edges, settings.bootstrap, settings.seed)
    return document, write_report(out or folder.path, document, results, manifest, settings, run_dir=folder.path)
