"""Segmenters' released outputs into the coarse files the harness reads (`<id>.npz`:
`probs` [K, H, W], `class_ids` [K], background first).

CLIP-ES (`generate_cams_voc12.py` / `generate_cams_coco14.py`) saves one `.npy` per image:
a pickled dict {"keys": foreground class indices (0-based, its `new_class_names` order),
"attn_highres": float16 [K, H, W] refined CAMs in [0, 1]}. Its `eval_cam_with_crf.py` turns
that into what its dCRF sees: background = 1 - max over the CAMs, stacked in front, class
ids = keys + 1. This converter writes exactly that, so `DenseCRF(preset: clip_es)` on the
converted files reproduces CLIP-ES's pseudo masks. Reading a pickle runs code from the file,
so it is only done with `--trust-pickle`, for files you made yourself or trust.

    python scripts/prepare_coarse.py clip-es --cams CAM_OUT_DIR --out /data/clip_es/voc_train --trust-pickle
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import numpy as np

from g4seg.classes import resolve_classes
from g4seg.errors import ConfigError, DataError
from g4seg.files import atomic_write_bytes

from .io import run_converter


def clip_es_probs(cam_dict, path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """(probs [K+1, H, W] float32, class_ids [K+1]) as `eval_cam_with_crf.py` builds them."""
    if not isinstance(cam_dict, dict) or not {"keys", "attn_highres"} <= set(cam_dict):
        raise DataError(f"{path}: not a CLIP-ES CAM file (a dict with 'keys' and 'attn_highres')")
    keys = np.asarray(cam_dict["keys"]).reshape(-1)
    cams = np.asarray(cam_dict["attn_highres"], dtype=np.float32)
    if not np.issubdtype(keys.dtype, np.integer) or keys.min(initial=0) < 0 or keys.max(initial=0) >= num_classes - 1:
        raise DataError(f"{path}: 'keys' {keys.tolist()} are not foreground indices 0..{num_classes - 2}")
    if cams.ndim != 3 or len(cams) != len(keys):
        raise DataError(f"{path}: 'attn_highres' {cams.shape} does not hold one map per key ({len(keys)})")
    if not np.isfinite(cams).all() or cams.min(initial=0) < 0 or cams.max(initial=0) > 1:
        raise DataError(f"{path}: 'attn_highres' must be finite CAMs in [0, 1]")
    background = 1 - cams.max(axis=0, keepdims=True) if len(cams) else np.ones((1, 1, 1), np.float32)
    return np.concatenate([background, cams]).astype(np.float32), np.concatenate([[0], keys + 1]).astype(np.int64)


def convert_clip_es(cams: Path, out: Path, classes: str, trust_pickle: bool) -> int:
    if not trust_pickle:
        raise ConfigError("CLIP-ES saves its CAMs as pickles, and loading a pickle runs code from the file; "
                          "pass --trust-pickle for files you made or trust")  # fmt: skip
    files = sorted(Path(cams).glob("*.npy"))
    if not files:
        raise DataError(f"{cams}: no CLIP-ES .npy files")
    num_classes = len(resolve_classes(classes))
    for path in files:
        try:
            cam_dict = np.load(path, allow_pickle=True).item()
        except Exception as e:  # noqa: BLE001 - an unpickler raises whatever the file's bytes make it raise
            raise DataError(f"{path}: cannot read as a CLIP-ES CAM file ({type(e).__name__}: {e})") from None
        probs, class_ids = clip_es_probs(cam_dict, path, num_classes)
        buf = io.BytesIO()
        np.savez_compressed(buf, probs=probs, class_ids=class_ids)
        atomic_write_bytes(Path(out) / f"{path.stem}.npz", buf.getvalue())
    return len(files)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="source", required=True)
    es = sub.add_parser("clip-es", help="CLIP-ES CAM .npy files (generate_cams_voc12.py / _coco14.py)")
    es.add_argument("--cams", required=True, type=Path, help="CLIP-ES's --cam_out_dir")
    es.add_argument("--out", required=True, type=Path, help="folder for <id>.npz (CoarseFromFiles: folder)")
    es.add_argument("--classes", default="voc", help="class preset the keys index (voc, coco_object)")
    es.add_argument("--trust-pickle", action="store_true", help="allow loading CLIP-ES's pickled dicts")
    args = parser.parse_args(argv)
    n, code = run_converter(lambda: convert_clip_es(args.cams, args.out, args.classes, args.trust_pickle), args.out)
    if code:
        return code
    print(f"{n} CLIP-ES CAM files -> {args.out}/<id>.npz (probs: [1 - max CAM, CAMs], class_ids: [0, keys + 1])")
    return 0
