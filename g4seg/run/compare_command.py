"""`g4seg compare RUN_A RUN_B [...]`: the winners view, the full table and the per-class
table across run folders, as if their strategies had run in one run.

Runs are compared on the images they share, paired per image (the bootstrap resamples
images, so every strategy's gain is drawn on the same images), and only when they start
from the same coarse masks on those images: a gain is refined minus coarse, so with other
coarse masks the gains would not be comparable. Strategies are named `RUN:strategy` (RUN
is the folder's name). Like `g4seg report`, it imports neither Lightning nor torch.
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError
from ..evaluation.bootstrap import DEFAULT_RESAMPLES, DEFAULT_SEED, check_resampling
from ..evaluation.metrics import check_edges
from ..evaluation.metrics import SHOWN
from ..evaluation.summary import summarize
from ..files import atomic_write_bytes, atomic_write_json
from ..report import per_class
from ..report.write import check_shown, markdown, terminal_summary
from ..types import BASELINE, SampleResult
from .folder import RunFolder
from .report_command import new_folder


def labels_of(folders: list[RunFolder]) -> list[str]:
    names = [f.path.resolve().name for f in folders]
    return names if len(set(names)) == len(names) else [f"{i + 1}.{n}" for i, n in enumerate(names)]


def merged(folders: list[RunFolder], labels: list[str]) -> tuple[list[SampleResult], list[str], list[str]]:
    """(one result per shared image, the prefixed strategy names, the class names)."""
    classes = folders[0].manifest["class_names"]
    for folder in folders[1:]:
        if folder.manifest["class_names"] != classes:
            raise ConfigError(f"{folder.path} scores other classes than {folders[0].path}; compare runs of one dataset")
    results = [{r.id: r for r in folder.results()} for folder in folders]
    shared = [i for i in folders[0].ids if all(i in r for r in results)]
    if not shared:
        raise ConfigError(f"{', '.join(str(f.path) for f in folders)} share no scored image; compare runs of one dataset")
    strategies = [f"{label}:{s}" for folder, label in zip(folders, labels) for s in folder.manifest["strategies"]]
    out = []
    for sample_id in shared:
        first = results[0][sample_id]
        counts, seconds, notes = {BASELINE: first.counts.get(BASELINE)}, {}, {}
        for label, by_id, folder in zip(labels, results, folders):
            r = by_id[sample_id]
            if r.counts.get(BASELINE) != first.counts.get(BASELINE):
                raise ConfigError(f"{folder.path} and {folders[0].path} start from other coarse masks (sample "
                                  f"{sample_id!r}); compare runs of one dataset and coarse source")  # fmt: skip
            for s in folder.manifest["strategies"]:
                counts[f"{label}:{s}"] = r.counts.get(s)
                if s in r.seconds:
                    seconds[f"{label}:{s}"] = r.seconds[s]
                if s in r.notes:
                    notes[f"{label}:{s}"] = r.notes[s]
        scored = first.unscored_reason is None
        out.append(SampleResult(sample_id, {}, counts if scored else {}, seconds=seconds, notes=notes,
                                unscored_reason=first.unscored_reason,
                                random_weights=[f"{lab}:{s}" for lab, b in zip(labels, results) for s in b[sample_id].random_weights]))  # fmt: skip
    return out, strategies, classes


def compare_main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="g4seg compare", description="compare the strategies of several run folders")
    parser.add_argument("runs", nargs="+", help="run folders (g4seg predict --output_dir) of one dataset and coarse source")
    parser.add_argument("--metric", default=SHOWN[0], help="the winners view's metric (miou boundary_iou mba miou_image ...)")
    parser.add_argument("--edges", type=float, nargs="+", help="strata edges in percent (default: the first run's)")
    parser.add_argument("--bootstrap", type=int, default=DEFAULT_RESAMPLES, help="bootstrap resamples (0: none)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--output", help="also write metrics.json and summary.md of the comparison here (a new folder)")
    args = parser.parse_args(argv)
    if len(args.runs) < 2:
        raise ConfigError("g4seg compare needs two run folders or more")
    shown = check_shown([args.metric, *[m for m in SHOWN if m != args.metric]], "--metric")
    check_resampling(args.bootstrap, args.seed)
    if args.edges:
        check_edges(args.edges, "--edges")
    out = new_folder(args.output) if args.output else None  # before the work, so a bad folder answers at once
    folders = [RunFolder.open(run) for run in args.runs]
    labels = labels_of(folders)
    results, strategies, classes = merged(folders, labels)
    edges = args.edges or folders[0].manifest["strata_edges"]
    document = summarize(results, strategies, classes, edges, args.bootstrap, args.seed)
    held = {label: len(f.ids) for label, f in zip(labels, folders)}
    print(f"compared on the {len(results)} images every run has ({', '.join(f'{k}: {v}' for k, v in held.items())})")
    print(terminal_summary(document, shown))
    if out is not None:
        atomic_write_json(out / "metrics.json", {**document, "runs": {k: str(f.path.resolve()) for k, f in zip(labels, folders)}})
        atomic_write_bytes(out / "summary.md", (markdown(document, None, shown) + "\n" + per_class.markdown(document)).encode())
        print(f"comparison: {out.resolve()}/summary.md")
