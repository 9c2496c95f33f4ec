"""Generation benchmark: seconds per image per injector, batched classes vs a per-class
loop, and the harness' overhead over the bare model calls; the start-latent options
(noise, DDIM inversion, Null-text inversion) with their latent reconstruction error;
CascadePSP's seconds per image; the CLIP segmenters'; the metrics' cost against DenseCRF and
the bootstrap's on a VOC-val-sized run; report.html's build; the SAM refiner; 1 vs 2
processes end to end and in steady state (`--only ddp`, see benchmark_ddp.py).

    python scripts/benchmark.py                      # tiny models, CPU, bundled images
    python scripts/benchmark.py --size sd21 --device cuda --dtype fp16   # real-size shapes, random weights

It measures; it asserts nothing. Each figure is the median of --repeats runs after a warm-up;
the two sides of each comparison run interleaved, so machine drift cancels out of the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from datamodules import VOCFolderDataModule  # noqa: E402
from g4seg.types import ClassProbs, Sample  # noqa: E402
from strategies.injectors import AttentionInjection, ControlNetInjection, NoInjection  # noqa: E402
from strategies.injectors.generation import DiffusionInjector  # noqa: E402

THREE_CLASSES = "2007_004537"  # cow, horse, person


def sd21_models(controlnet: bool):
    """SD 2.1-shaped (865M UNet, OpenCLIP-H text encoder) models with random weights."""
    from diffusers import AutoencoderKL, ControlNetModel, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from g4seg.models.diffusion import DiffusionModels, clip_tokenizer

    unet = UNet2DConditionModel(
        sample_size=64, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True,
        block_out_channels=(320, 640, 1280, 1280),
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512,
    )  # fmt: skip
    text = CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=1024, intermediate_size=4096,
                                        num_attention_heads=16, num_hidden_layers=23, projection_dim=1024,
                                        hidden_act="gelu"))  # fmt: skip
    cn = ControlNetModel.from_unet(unet) if controlnet else None
    sched = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                          prediction_type="v_prediction")  # fmt: skip
    return DiffusionModels(vae, unet, text, clip_tokenizer(), sched, cn, random_weights=True, default_resolution=512,
                           name="sd21-shaped")  # fmt: skip


def build(kind: str, size: str, device: str, dtype: torch.dtype, **kwargs) -> DiffusionInjector:
    cls = {"none": NoInjection, "emi": AttentionInjection, "emi-dd": AttentionInjection,
           "controlnet": ControlNetInjection}[kind]  # fmt: skip
    kwargs = {"mode": "densediffusion", **kwargs} if kind == "emi-dd" else kwargs
    if size == "tiny":
        inj = cls(**kwargs)
    else:
        import g4seg.models.diffusion as diffusion

        original = diffusion.load_diffusion
        models = sd21_models(kind == "controlnet")
        import strategies.injectors.generation as generation

        generation.load_diffusion = lambda *a, **k: models
        try:
            inj = cls(**kwargs, **({"controlnet": "sd21-shaped"} if kind == "controlnet" else {}))
        finally:
            generation.load_diffusion = original
    return inj.to(device=device, dtype=dtype)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fns: list, device: str, repeats: int) -> list[float]:
    """Median seconds of each function, run interleaved (a, b, a, b, ...) so that drift in
    machine speed (shared cores, frequency) hits every variant alike."""
    for fn in fns:
        fn()
    sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, bucket in zip(fns, times):
            start = time.perf_counter()
            fn()
            sync(device)
            bucket.append(time.perf_counter() - start)
    return [statistics.median(t) for t in times]


def one_class(sample: Sample, k: int) -> Sample:
    """The sample with only foreground channel k (and background): a per-class job."""
    keep = [0, k]
    coarse = ClassProbs(sample.coarse.class_ids[keep], sample.coarse.probs[keep])
    return Sample(sample.id, sample.image, sample.gt, sample.class_names, coarse)


def bare_calls(inj: DiffusionInjector, samples: list[Sample]):
    """The model calls alone, on tensors prepared beforehand: the floor for the harness."""
    jobs = inj.make_jobs(samples)
    device = inj.device
    r = inj.resolution
    x = torch.randn(len(samples), 3, r, r, device=device, dtype=inj.vae.dtype)
    idx = torch.tensor(jobs.sample_index, device=device)
    tok = inj.models_info.tokenizer
    ids = tok(jobs.prompts, padding="max_length", max_length=tok.model_max_length, return_tensors="pt").input_ids
    ids = ids.to(device)
    t = torch.full((len(jobs),), inj.timestep, device=device)

    @torch.no_grad()
    def run():
        with inj.autocast():  # the precision the injector runs at (fp16 on a GPU by default)
            lat = inj.vae.encode(x).latent_dist.mean[idx]
            text = inj.text_encoder(ids)[0]
            kwargs = inj.unet_inputs(jobs, lat, t, text)
            with inj.injection(jobs):
                out = inj.unet(lat, t, encoder_hidden_states=text, **kwargs).sample
            inj.vae.decode(out)

    return run


def inversion_table(samples: list[Sample], args, dtype) -> None:
    """s/image and latent reconstruction MSE (one step back to the image latent, no layout
    injected) per start-latent option, at the paper setting's guidance 1 and at 7.5."""
    print(f"\n{'inversion':<10} {'guidance':>8} {'s/image':>9} {'latent MSE':>11}")
    for inversion, scale in (("none", 1.0), ("ddim", 1.0), ("none", 7.5), ("ddim", 7.5), ("null_text", 7.5)):
        inj = build("emi", args.size, args.device, dtype, inversion=inversion, guidance_scale=scale)
        [seconds] = timed([lambda: inj.generate(samples)], args.device, max(1, args.repeats // 2))
        x0, x0_hat = inj.reconstruct(samples)
        mse = float(((x0_hat.float() - x0.float()) ** 2).mean())
        print(f"{inversion:<10} {scale:>8g} {seconds / len(samples):>9.4f} {mse:>11.4f}")


def producers_table(samples: list[Sample], args) -> None:
    """Seconds per image of each coarse producer (CLIP text embeddings cached after the first
    image, as in a run), and the parameters a G4Seg refiner on the same CLIP does not load again."""
    from datamodules import CLIPES, SCLIP, ClearCLIP, HFSegmenter, MaskCLIP
    from strategies.refiners import Correspondence

    print(f"\n{'coarse producer':<22} {'s/image':>9}")
    producers = {"MaskCLIP": MaskCLIP(pipeline="sclip", names="voc21_sclip.txt"), "SCLIP": SCLIP(names="voc21_sclip.txt"),
                 "ClearCLIP": ClearCLIP(), "HF tiny-segformer": HFSegmenter(model="tiny-segformer"),
                 "HF tiny-mask2former": HFSegmenter(model="tiny-mask2former"), "CLIP-ES (tiny)": CLIPES(),
                 "CLIP-ES (ViT-B/16, random)": CLIPES(clip="ViT-B-16")}  # fmt: skip
    for name, seg in producers.items():
        seg.to(args.device)
        run = lambda seg=seg: [seg.make(s.id, s.image.numpy(), s.gt.numpy(), 21, s.class_names) for s in samples]  # noqa: E731
        [seconds] = timed([run], args.device, max(1, args.repeats // 2))
        print(f"{name:<22} {seconds / len(samples):>9.4f}")
    refiner = Correspondence()
    shared = refiner.encoder.visual is SCLIP().model.visual
    n = sum(p.numel() for p in refiner.encoder.visual.parameters())
    print(f"shared CLIP: the G4Seg refiner reuses the segmenter's vision tower: {shared} ({n:,} parameters not loaded twice;"
          " ViT-B/16: 86,192,640)")


def cascadepsp_table(samples: list[Sample], args) -> None:
    from strategies.refiners import CascadePSP

    print(f"\n{'CascadePSP (tiny, random)':<26} {'L':>5} {'s/image':>9}")
    for L, fast in ((256, True), (256, False), (900, False)):
        refiner = CascadePSP(L=L, fast=fast).to(args.device)
        [seconds] = timed([lambda: [refiner.refine(s, s.coarse, None) for s in samples]], args.device,
                          max(1, args.repeats // 2))  # fmt: skip
        print(f"{'global only' if fast else 'global + local':<26} {L:>5} {seconds / len(samples):>9.4f}")


def segrefiner_table(samples: list[Sample], args) -> None:
    """Tiny network at 64 and 256 px, and the released network's shapes (random weights: the
    cost does not depend on them) at its model size 256 with its 6 timesteps."""
    from strategies.refiners import SegRefiner

    print(f"\n{'SegRefiner (random)':<26} {'size':>5} {'s/image':>9} {'s/class':>9}")
    classes = sum(len(s.coarse.foreground()) for s in samples)
    with tempfile.TemporaryDirectory() as tmp:
        from g4seg.models.segrefiner import DenoiseUNet

        path = Path(tmp) / "segrefiner_released_shapes.pth"  # through the real loader, as a release file
        torch.save({"state_dict": {"denoise_model." + k: v for k, v in DenoiseUNet().state_dict().items()}}, path)
        for name, size, weights in (("tiny", 64, "tiny"), ("tiny", 256, "tiny"), ("released shapes", 256, str(path))):
            refiner = SegRefiner(weights=weights, model_size=size).to(args.device)
            [seconds] = timed([lambda: [refiner.refine(s, s.coarse, None) for s in samples]], args.device, 1)
            print(f"{name:<26} {size:>5} {seconds / len(samples):>9.3f} {seconds / classes:>9.3f}")


def metrics_table(args) -> None:
    """Cost of all metrics for one 512x512 image with 21 classes (worst case: every class
    present, GT side included) against DenseCRF on it; the bootstrap of a VOC-val-sized run."""
    import numpy as np

    from g4seg.evaluation.boundary import GroundTruthBoundaries
    from g4seg.evaluation.counts import pixel_counts
    from g4seg.evaluation.records import from_record
    from g4seg.evaluation.summary import summarize
    from g4seg.evaluation.synthetic import voc_like_records
    from strategies.refiners import DenseCRF

    rng = np.random.default_rng(0)
    seeds = rng.integers(0, 512, (21, 2))
    yy, xx = np.mgrid[:512, :512]
    gt = np.argmin(((yy[..., None] - seeds[:, 0]) ** 2 + (xx[..., None] - seeds[:, 1]) ** 2), -1).astype(np.int64)
    pred = np.roll(gt, (3, -4), axis=(0, 1))
    probs = torch.nn.functional.one_hot(torch.from_numpy(pred), 21).permute(2, 0, 1).float() * 0.6 + 0.4 / 21
    image = torch.from_numpy(rng.integers(0, 255, (512, 512, 3), dtype=np.uint8))
    sample = Sample("bench", image, torch.from_numpy(gt), [str(i) for i in range(21)],
                    ClassProbs(torch.arange(21), probs))  # fmt: skip
    crf = DenseCRF()

    def all_metrics():
        pixel_counts(torch.from_numpy(pred), torch.from_numpy(gt), 21, GroundTruthBoundaries(gt.astype(np.uint8)))

    metric_s, crf_s = timed([all_metrics, lambda: crf.refine(sample, sample.coarse, None)], "cpu", args.repeats)
    print(f"\n{'metrics (512x512, 21 classes)':<32} {'s/image':>9}")
    print(f"{'all metrics, one source':<32} {metric_s:>9.4f}")
    print(f"{'DenseCRF':<32} {crf_s:>9.4f}   metrics = {100 * metric_s / crf_s:.1f}% of DenseCRF")
    results = [from_record(r) for r in voc_like_records(rng, 1449, ["a", "b", "c"])]
    start = time.perf_counter()
    summarize(results, ["a", "b", "c"], [str(c) for c in range(21)], [0, 40, 80, 100], 1000, 0)
    print(f"metrics document with bootstrap, 1,449 images x 3 strategies x 1,000 resamples, 4 metrics x 4 strata: "
          f"{time.perf_counter() - start:.2f} s (BLAS threads as the machine has; OPENBLAS_NUM_THREADS=1 for one core)")


def sam_table(samples: list[Sample], args) -> None:
    """SAM refiner s/image (5 iterations, the encoder run once per image) and the image
    encoder's share of it; --sam-model names real weights (a folder) for a GPU timing."""
    from strategies.refiners import SAMRefiner

    refiner = SAMRefiner(model=args.sam_model, iterations=5).to(args.device)

    def full():
        refiner.shared._embeddings.clear()
        for s in samples:
            refiner.refine(s, s.coarse, None)

    def encoder():
        refiner.shared._embeddings.clear()
        for s in samples:
            refiner.shared.embed(s.id, s.image.numpy())

    total, enc = timed([full, encoder], args.device, max(1, args.repeats // 2))
    print(f"\n{'SAM refiner (' + args.sam_model + ')':<32} {'s/image':>9}")
    print(f"{'whole refiner, 5 iterations':<32} {total / len(samples):>9.4f}")
    print(f"{'image encoder (once per image)':<32} {enc / len(samples):>9.4f}   {100 * enc / total:.0f}% of the refiner")


def report_table(args) -> None:
    """report.html of a VOC-val-sized run: 1,449 samples (the bundled real images and masks
    under 1,449 ids, random counts in the records), 6 strategies; build time and size."""
    import json
    import shutil
    import tempfile

    import numpy as np

    from g4seg.evaluation.records import record_path
    from g4seg.evaluation.synthetic import voc_like_records
    from g4seg.files import atomic_write_json
    from g4seg.report.write import ReportSettings
    from g4seg.run.folder import RunFolder
    from g4seg.run.scoring import score

    root = Path(args.root)
    images = sorted((root / "JPEGImages").glob("*.jpg"))
    gts = [root / "SegmentationClass" / f"{p.stem}.png" for p in images]
    strategies = ["identity", "densecrf", "cascadepsp", "g4seg_emi", "g4seg_emi+crf", "g4seg_controlnet"]
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        data, out = Path(tmp) / "data", Path(tmp) / "run"
        for sub in ("JPEGImages", "SegmentationClass"):
            (data / sub).mkdir(parents=True)
        ids = [f"{i:06d}" for i in range(1449)]
        for i, sample_id in enumerate(ids):
            (data / "JPEGImages" / f"{sample_id}.jpg").symlink_to(images[i % len(images)].resolve())
            (data / "SegmentationClass" / f"{sample_id}.png").symlink_to(gts[i % len(gts)].resolve())
            for source in ["baseline", *strategies]:
                (out / "masks" / source).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(gts[(i + len(source)) % len(gts)], out / "masks" / source / f"{sample_id}.png")
        for sample_id, record in zip(ids, voc_like_records(rng, 1449, strategies)):
            record["id"] = sample_id
            record["files"] = {"image": str(data / "JPEGImages" / f"{sample_id}.jpg"),
                               "gt": str(data / "SegmentationClass" / f"{sample_id}.png")}  # fmt: skip
            atomic_write_json(record_path(out, sample_id), record)
        config = {"data": {"init_args": {"root": str(data), "classes": "voc"}},
                  "model": {"strategies": [{"name": s, "refiners": []} for s in strategies]}}  # fmt: skip
        (out / "run.json").write_text(json.dumps({"ids": ids, "strategies": strategies, "strata_edges": [0, 40, 80, 100],
                                                  "class_names": [str(c) for c in range(21)], "config": config}))  # fmt: skip
        start = time.perf_counter()
        score(RunFolder.open(out), ReportSettings())
        seconds = time.perf_counter() - start
        size = sum(p.stat().st_size for p in [out / "report.html", *(out / "report").rglob("*"), out / "strata.png"] if p.is_file())
        thumbs = len(list((out / "report" / "thumbs").rglob("*.jpg")))
        print(f"\nreport of 1,449 samples x 6 strategies (12 best + 12 worst per strategy and stratum): "
              f"built in {seconds:.1f} s (bootstrap and plots included), {size / 1e6:.1f} MB ({thumbs} thumbnails)")


def pool_table(args) -> None:
    """DenseCRF alone on --stage-images real VOC images: serially in this process, and in the
    worker pool of 1 and 2 processes (the module's own scheduling over one batch); equal masks."""
    from benchmark_ddp import link_farm

    from g4seg.run.module import G4SegModule, StrategySpec
    from strategies.refiners import DenseCRF

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        link_farm(Path(args.root).parents[1] / "real" / "voc2012", data, args.stage_images)
        dm = VOCFolderDataModule(str(data))
        dm.setup()
        samples = [dm.dataset[i] for i in range(len(dm.dataset))]
    print(f"\nDenseCRF on {len(samples)} real VOC images, the module's step scheduling, {os.cpu_count()} CPUs")
    print(f"{'':<22} {'s/image':>9} {'x serial':>9}")
    reference, serial = None, None
    for workers in (0, 1, 2):
        module = G4SegModule([StrategySpec("crf", [DenseCRF()])], class_names=samples[0].class_names)
        module.start_pool(workers)
        try:
            if module.pool is not None:  # workers started and warm before the clock
                module.assemble(samples[0], module.run_batch(samples[:1], {}))
            start = time.perf_counter()
            labels = [module.assemble(s, steps)[1]["crf"] for steps in [module.run_batch(samples, {})] for s in samples]
            seconds = time.perf_counter() - start
        finally:
            module.stop_pool()
        reference = reference or labels
        serial = serial or seconds
        same = all(torch.equal(a, b) for a, b in zip(labels, reference))
        print(f"{'serial' if not workers else f'{workers} worker(s)':<22} {seconds / len(samples):>9.4f} "
              f"{serial / seconds:>8.2f}x   masks equal to serial: {same}")


NESTED = ("clip_features", "matching")  # ranges inside refine.Correspondence


def stages_table(args) -> None:
    """A whole `g4seg predict` of the demo strategies on --stage-images real VOC images with
    the per-stage profile (scripts/stage_profile.py): ms per image of each stage, and the
    harness's wall time over the sum of the model stages (1.0 = no overhead left)."""
    import stage_profile
    from benchmark_ddp import link_farm

    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        link_farm(Path(args.root).parents[1] / "real" / "voc2012", data, args.stage_images)
        profile = stage_profile.profile_predict(["--config", args.stage_config, "--data.init_args.root", str(data),
                                                 "--output_dir", str(Path(tmp) / "run"), "--scoring.bootstrap", "0",
                                                 "--data.init_args.batch_size", "2"])  # fmt: skip
    window = profile["window"]
    model = sum(v["cpu_ms_per_image"] for k, v in window["stages"].items() if k not in NESTED)
    print(f"\nper-stage profile of `g4seg predict --config {args.stage_config}` on {args.stage_images} images "
          f"({torch.get_num_threads()} threads)")
    print(stage_profile.table(profile))
    print(f"wall / model stages: {window['wall_ms_per_image'] / model:.2f} ({window['wall_ms_per_image']:.0f} ms vs "
          f"{model:.0f} ms per image in the window; CPU refiners in the worker pool are not in the model stages)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["tiny", "sd21"], default="tiny")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "fp16", "bf16"], default="fp32")
    parser.add_argument("--images", type=int, default=4, help="images per batch for s/image")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--root", default=str(Path(__file__).resolve().parents[1] / "data" / "demo" / "voc2012"))
    parser.add_argument("--only", nargs="+", default=["injectors", "inversion", "cascadepsp", "segrefiner", "producers", "metrics", "report", "sam"],
                        choices=["injectors", "inversion", "cascadepsp", "segrefiner", "producers", "metrics", "report", "sam", "ddp", "stages", "pool"])
    parser.add_argument("--stage-images", type=int, default=16, help="images for --only stages (bundled real ones, repeated)")
    parser.add_argument("--stage-config", default="configs/demo.yaml", help="the config --only stages profiles")
    parser.add_argument("--ddp-images", type=int, default=200, help="images for --only ddp (bundled ones, repeated)")
    parser.add_argument("--ddp-launch", nargs="+", choices=["lightning", "torchrun"], default=["lightning", "torchrun"])
    parser.add_argument("--sam-model", default="tiny", help="SAM for --only sam: tiny, or a checkpoint folder")  # fmt: skip
    args = parser.parse_args()
    if "ddp" in args.only:  # subprocess runs only: no model is built here
        from benchmark_ddp import ddp_table

        ddp_table(args.ddp_images, args.ddp_launch)
        if args.only == ["ddp"]:
            return
    if "stages" in args.only:
        stages_table(args)
    if "pool" in args.only:
        pool_table(args)
    if set(args.only) <= {"ddp", "stages", "pool"}:
        return
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[args.dtype]

    dm = VOCFolderDataModule(args.root)
    dm.setup()
    samples = [dm.dataset[i] for i in range(min(args.images, len(dm.dataset)))]
    three = dm.dataset[dm.dataset.ids.index(THREE_CLASSES)]
    n_jobs = sum(len(s.coarse.foreground()) for s in samples)
    print(f"device {args.device}, {args.dtype}, {args.size} models, threads {torch.get_num_threads()}; "
          f"{len(samples)} images / {n_jobs} classes per batch")  # fmt: skip

    if "inversion" in args.only:
        inversion_table(samples, args, dtype)
    if "cascadepsp" in args.only:
        cascadepsp_table(samples, args)
    if "segrefiner" in args.only:
        segrefiner_table(samples, args)
    if "producers" in args.only:
        producers_table(samples, args)
    if "metrics" in args.only:
        metrics_table(args)
    if "report" in args.only:
        report_table(args)
    if "sam" in args.only:
        sam_table(samples, args)
    if "injectors" not in args.only:
        return
    print(f"\n{'injector':<12} {'s/image':>9} {'batched 3 cls':>14} {'loop 3 cls':>11} {'speed-up':>9} "
          f"{'bare calls':>11} {'overhead':>9}")  # fmt: skip
    for kind in ("none", "emi", "emi-dd", "controlnet"):
        inj = build(kind, args.size, args.device, dtype)
        per_image, bare = (t / len(samples) for t in timed(
            [lambda: inj.generate(samples), bare_calls(inj, samples)], args.device, args.repeats))  # fmt: skip
        singles = [one_class(three, k) for k, _ in three.coarse.foreground()]
        batched, loop = timed(
            [lambda: inj.generate([three]), lambda: [inj.generate([s]) for s in singles]], args.device, args.repeats
        )
        print(f"{kind:<12} {per_image:>9.4f} {batched:>14.4f} {loop:>11.4f} {loop / batched:>8.2f}x "
              f"{bare:>11.4f} {100 * (per_image - bare) / bare:>8.1f}%")  # fmt: skip


if __name__ == "__main__":
    main()
