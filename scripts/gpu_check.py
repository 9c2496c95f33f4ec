"""GPU figures at real size with random weights (no download): the SD 2.1-shaped G4Seg
generation per injector, every refiner, and whole `g4seg predict` runs, into one JSON.

    bash scripts/gpu_check.sh [OUT]          # what to run on a GPU machine
    python scripts/gpu_check.py --size tiny --device cpu --out /tmp/check   # the same steps, tiny, on a CPU

Real-size models are built from their published configs (SD 2.1-base UNet 865 M, OpenCLIP-H
text encoder, SD VAE, a ControlNet from the UNet, CLIP ViT-B/16 at 448 px, CascadePSP's
ResNet-50 at L 900, SAM ViT-H) and saved to folders in their libraries' layouts, so that the
harness runs load them through the real loaders. Random weights make timings and memory
real and the masks meaningless. Each section is written to the JSON as soon as it is
measured (a stopped check keeps what it has); it measures and asserts nothing.
"""

from __future__ import annotations

import argparse
import copy
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "scripts")]

import torch
from benchmark import THREE_CLASSES, bare_calls, one_class, sd21_models, timed
from benchmark_ddp import link_farm, record_rates

from g4seg.files import atomic_write_json

GIB = 2**30


class Results:
    """The JSON on disk, rewritten atomically after every figure."""

    def __init__(self, path: Path) -> None:
        self.path, self.data = path, {}

    def put(self, section: str, key: str, value) -> None:
        self.data.setdefault(section, {})[key] = value
        atomic_write_json(self.path, self.data)
        print(f"{section:>10} | {key}: {value}", flush=True)


def peak_gib(fn, device: str) -> dict | None:
    """Peak GPU memory of one call: in all (every model still loaded counts) and above
    what was allocated before it (the call's own activations)."""
    if not device.startswith("cuda"):
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    return {"total": round(peak / GIB, 2), "above_resident": round((peak - before) / GIB, 2)}


def save_models(size: str, device: str, folder: Path) -> dict[str, str]:
    """Random models in the folders the loaders read: {config key: path}."""
    import transformers as tf
    from diffusers import ControlNetModel, DDPMScheduler

    from g4seg.models.cascadepsp import RefinementNetwork
    from g4seg.models.tiny import tiny_diffusion, tiny_sam

    paths = {k: folder / k for k in ("sd", "controlnet", "sam")}
    with torch.device(device):  # initialised where they run: minutes less for 1.3 B parameters
        models = sd21_models(controlnet=True) if size == "real" else tiny_diffusion(controlnet=True)
        models.scheduler = None
        if size == "real":
            vision = tf.SamVisionConfig(hidden_size=1280, num_hidden_layers=32, num_attention_heads=16, mlp_dim=5120,
                                        global_attn_indexes=[7, 15, 23, 31])  # SAM ViT-H  # fmt: skip
            sam = tf.SamModel(tf.SamConfig(vision_config=vision.to_dict()))
        else:
            sam = tiny_sam()
        net = RefinementNetwork(**({} if size == "real" else {"base": 8, "layers": (1, 1, 1, 1)}))
    for part in ("unet", "vae", "text_encoder", "tokenizer"):
        getattr(models, part).save_pretrained(paths["sd"] / part)
    scheduler = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                              prediction_type="v_prediction" if size == "real" else "epsilon")  # fmt: skip
    scheduler.save_pretrained(paths["sd"] / "scheduler")
    cn = models.controlnet if models.controlnet is not None else ControlNetModel.from_unet(models.unet)
    cn.save_pretrained(paths["controlnet"])
    sam.save_pretrained(paths["sam"])
    tf.SamProcessor(tf.SamImageProcessor()).save_pretrained(paths["sam"])
    torch.save(net.state_dict(), folder / "cascadepsp.pth")
    return {"sd": str(paths["sd"]), "controlnet": str(paths["controlnet"]), "sam": str(paths["sam"]),
            "cascadepsp": str(folder / "cascadepsp.pth"), "clip": "ViT-B-16" if size == "real" else "tiny",
            "cascadepsp_size": "{}" if size == "real" else "{base: 8, layers: [1, 1, 1, 1]}"}  # fmt: skip


def injector(kind: str, paths: dict, device: str, **kwargs):
    from strategies.injectors import (
        AttentionInjection,
        ControlNetInjection,
        NoInjection,
    )

    cls = {"none": NoInjection, "emi": AttentionInjection, "emi-dd": AttentionInjection, "controlnet": ControlNetInjection}[kind]
    if kind == "emi-dd":
        kwargs["mode"] = "densediffusion"
    if kind == "controlnet":
        kwargs["controlnet"] = paths["controlnet"]
    return cls(model=paths["sd"], **kwargs).to(device)


def generation(out: Results, samples, three, paths: dict, args) -> None:
    """s/image, peak memory and overhead over the bare calls per injector (harness default:
    fp32 weights under fp16 autocast), batched classes vs a per-class loop, then variants."""
    n = len(samples)
    for kind in ("none", "emi", "emi-dd", "controlnet"):
        inj = injector(kind, paths, args.device)
        per, bare = (t / n for t in timed([lambda: inj.generate(samples), bare_calls(inj, samples)], args.device, args.repeats))
        singles = [one_class(three, k) for k, _ in three.coarse.foreground()]
        batched, loop = timed([lambda: inj.generate([three]), lambda: [inj.generate([s]) for s in singles]],
                              args.device, args.repeats)  # fmt: skip
        out.put("generation", kind, {"s_per_image": round(per, 4), "bare_s_per_image": round(bare, 4),
                                     "overhead_pct": round(100 * (per - bare) / bare, 1),
                                     "batched_3_classes_s": round(batched, 4), "loop_3_classes_s": round(loop, 4),
                                     "batching_speedup": round(loop / batched, 2),
                                     "peak_gib": peak_gib(lambda: inj.generate(samples), args.device)})  # fmt: skip
    base = injector("emi", paths, args.device)
    # the loaders share one copy of the models per process: a variant that changes weights gets its own
    variants = {"bf16 autocast": lambda: injector("emi", paths, args.device, precision="bf16"),
                "fp16 weights": lambda: copy.deepcopy(base).half(),
                "channels_last": lambda: channels_last(copy.deepcopy(base))}  # fmt: skip
    for name, make in variants.items():
        inj = make()
        ref, var = timed([lambda: base.generate(samples), lambda: inj.generate(samples)], args.device, args.repeats)
        out.put("emi_variants", name, {"s_per_image": round(var / n, 4), "vs_default": round(ref / var, 2),
                                       "peak_gib": peak_gib(lambda: inj.generate(samples), args.device)})  # fmt: skip
        inj = None  # frees its models before the next variant is built


def channels_last(inj):
    for m in (inj.unet, inj.vae):
        m.to(memory_format=torch.channels_last)
    return inj


def refiners(out: Results, samples, paths: dict, args) -> None:
    from strategies.refiners import CascadePSP, Correspondence, SAMRefiner

    generated = injector("emi", paths, args.device).generate(samples)
    size = {} if args.size == "real" else {"base": 8, "layers": (1, 1, 1, 1)}
    makers = {
        "Correspondence (CLIP ViT-B/16, 448)": lambda p: Correspondence(clip=paths["clip"], precision=p,
                                                                         image_size=448 if args.size == "real" else None),
        "CascadePSP (ResNet-50, L 900)": lambda p: CascadePSP(weights=paths["cascadepsp"], L=900 if args.size == "real" else 256,
                                                              precision=p, **size),
        "SAMRefiner (ViT-H, 5 iterations)": lambda p: SAMRefiner(model=paths["sam"], distance="exact", precision=p),
    }  # fmt: skip
    for name, make in makers.items():
        for precision in ("fp32", "bf16", "fp16"):
            refiner = make(precision).to(args.device)

            def run(refiner=refiner):
                if hasattr(refiner, "shared"):
                    refiner.shared._embeddings.clear()  # the image encoder counted every time
                for s, g in zip(samples, generated):
                    refiner.refine(s, s.coarse, g)

            [seconds] = timed([run], args.device, max(1, args.repeats // 2))
            out.put("refiners", f"{name} {precision}", {"s_per_image": round(seconds / len(samples), 4),
                                                         "peak_gib": peak_gib(run, args.device)})  # fmt: skip
    try:
        from strategies.refiners import DenseCRF

        crf = DenseCRF()
        [seconds] = timed([lambda: [crf.refine(s, s.coarse, None) for s in samples]], "cpu", max(1, args.repeats // 2))
        out.put("refiners", "DenseCRF (CPU)", {"s_per_image": round(seconds / len(samples), 4), "cpus": os.cpu_count()})
    except Exception as e:
        out.put("refiners", "DenseCRF (CPU)", f"not run: {e}")


def producers(out: Results, samples, args) -> None:
    """Coarse producers at real size (random ViT-B/16): CLIP-ES (with its Grad-CAM backward)
    and SCLIP, each under fp32 and its GPU default (fp16 autocast)."""
    from datamodules import CLIPES, SCLIP

    clip = "ViT-B-16" if args.size == "real" else "tiny"
    for name, make in (("CLIP-ES", lambda p: CLIPES(clip=clip, precision=p)), ("SCLIP", lambda p: SCLIP(clip=clip, precision=p))):
        for precision in ("fp32", "auto"):
            producer = make(precision).to(args.device)

            def run(producer=producer):
                with torch.inference_mode():  # as under Trainer.predict
                    producer.produce(samples)

            [seconds] = timed([run], args.device, max(1, args.repeats // 2))
            out.put("producers", f"{name} {precision}", {"s_per_image": round(seconds / len(samples), 4),
                                                         "peak_gib": peak_gib(run, args.device)})  # fmt: skip


def flow_parts(kind: str, size: str) -> dict:
    """SD3-medium- or Flux.1-dev-shaped random parts (real: published configs, SD3 without
    T5, as it runs; Flux with T5-XXL's shape) or the tiny families."""
    import transformers as tf
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel, SD3Transformer2DModel

    from g4seg.models.diffusion import clip_tokenizer
    from g4seg.models.tiny import tiny_flux, tiny_sd3, tiny_t5_tokenizer

    if size != "real":
        return tiny_sd3() if kind == "sd3" else tiny_flux()
    shift, scale = (0.0609, 1.5305) if kind == "sd3" else (0.1159, 0.3611)
    vae = AutoencoderKL(latent_channels=16, block_out_channels=(128, 256, 512, 512), layers_per_block=2,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                        shift_factor=shift, scaling_factor=scale, use_quant_conv=False, use_post_quant_conv=False)  # fmt: skip

    def clip(width, layers, heads, projection=True):
        cfg = tf.CLIPTextConfig(hidden_size=width, num_hidden_layers=layers, num_attention_heads=heads,
                                intermediate_size=4 * width, projection_dim=width, hidden_act="gelu")  # fmt: skip
        return (tf.CLIPTextModelWithProjection if projection else tf.CLIPTextModel)(cfg)

    if kind == "sd3":
        transformer = SD3Transformer2DModel(sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                                            num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                                            pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)  # fmt: skip
        return {"transformer": transformer, "vae": vae, "text_encoder": clip(768, 12, 12), "tokenizer": clip_tokenizer(),
                "text_encoder_2": clip(1280, 32, 20), "tokenizer_2": clip_tokenizer(), "text_encoder_3": None,
                "tokenizer_3": None, "scheduler": FlowMatchEulerDiscreteScheduler(shift=3.0)}  # fmt: skip
    t5 = tf.T5EncoderModel(tf.T5Config(vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                                       feed_forward_proj="gated-gelu"))  # fmt: skip
    scheduler = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True, base_shift=0.5, max_shift=1.15,
                                                base_image_seq_len=256, max_image_seq_len=4096)  # fmt: skip
    return {"transformer": FluxTransformer2DModel(guidance_embeds=True), "vae": vae, "text_encoder": clip(768, 12, 12, False),
            "tokenizer": clip_tokenizer(), "text_encoder_2": t5, "tokenizer_2": tiny_t5_tokenizer(), "scheduler": scheduler}  # fmt: skip


def flow(out: Results, samples, args) -> None:
    """SD3-medium (2 B, fp16 autocast) and Flux.1-dev (12 B + T5-XXL, bf16 weights) shapes
    at their native 1024 px: s/image without and with EMI, peak memory."""
    from g4seg.models import hub
    from g4seg.models.diffusion import transformer_models
    from strategies.injectors import AttentionInjection, NoInjection

    for kind in ("sd3", "flux"):
        name = f"{kind}-{args.size}-shaped"
        with torch.device(args.device):
            parts = flow_parts(kind, args.size)
        models = transformer_models(parts, name, random_weights=True)
        if kind == "flux" and args.device.startswith("cuda"):
            for part in ("unet", "vae", "text_encoder", "text_encoder_2"):
                getattr(models, part).to(torch.bfloat16)
        hub.shared("diffusion", (name, None), lambda models=models: models)  # the loaders hand these out by name
        params = sum(p.numel() for p in models.unet.parameters())
        precision = "bf16" if kind == "flux" else "auto"
        for cls in (NoInjection, AttentionInjection):
            inj = cls(model=name, precision=precision).to(args.device)
            [seconds] = timed([lambda: inj.generate(samples)], args.device, max(1, args.repeats // 2))
            out.put("flow", f"{kind} {cls.__name__}", {"s_per_image": round(seconds / len(samples), 4),
                                                       "transformer_params": params, "resolution": inj.resolution,
                                                       "sigma": round(inj.sigma, 4), "precision": precision,
                                                       "peak_gib": peak_gib(lambda: inj.generate(samples), args.device)})  # fmt: skip
            inj = None  # frees its models before the next one is built
        hub._LOADED.clear()
        del models, parts
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


DATA = """data:
  class_path: datamodules.VOCFolderDataModule
  init_args:
    root: {data}
    classes: voc
    coarse: {{class_path: datamodules.SyntheticDegradation, init_args: {{iou_range: [10, 95], soften_sigma: 3.0}}}}
    batch_size: {batch}
    num_workers: {workers}
"""
CONFIG = """seed_everything: 0
trainer: {{accelerator: {accelerator}, devices: {devices}, strategy: {strategy}}}
{data_block}model:
  injectors:
    emi: {{class_path: strategies.injectors.AttentionInjection, init_args: {{model: {sd}, timestep: 400, mode: add, alpha: 10.0}}}}
  strategies:
  - {{name: identity, refiners: [{{class_path: strategies.refiners.Identity}}]}}
  - {{name: g4seg, injector: emi, refiners: [{{class_path: strategies.refiners.Correspondence,
      init_args: {{clip: {clip}, {clip_size}preset: open_vocabulary}}}}]}}
"""
OTHERS = """  - {{name: cascadepsp, refiners: [{{class_path: strategies.refiners.CascadePSP, init_args: {{weights: {cascadepsp}, L: {L}, {psp_size}}}}}]}}
  - {{name: sam, refiners: [{{class_path: strategies.refiners.SAMRefiner, init_args: {{model: {sam}, distance: exact}}}}]}}
"""


def harness(out: Results, paths: dict, args, work: Path) -> None:
    """`g4seg predict` as a user runs it on --e2e-images images (the bundled ones repeated):
    end to end, to the first record, steady records/s; on 1 and on every GPU. Strategies:
    identity + G4Seg (EMI + SCA/CF), and with --e2e-strategies all also CascadePSP and SAM."""
    data = work / "e2e_data"
    link_farm(ROOT / "data" / "real" / "voc2012", data, args.e2e_images)
    gpus = torch.cuda.device_count() if args.device.startswith("cuda") else 0
    counts = [1] + ([gpus] if gpus > 1 else [])
    for devices in counts:
        config = work / f"e2e_{devices}.yaml"
        psp = paths["cascadepsp_size"].strip("{}")
        template = CONFIG + (OTHERS if args.e2e_strategies == "all" else "")
        config.write_text(template.format(
            accelerator="gpu" if gpus else "cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
            data_block=DATA.format(data=data, batch=args.batch, workers=args.loader_workers), sd=paths["sd"], clip=paths["clip"], clip_size="image_size: 448, " if args.size == "real" else "",
            cascadepsp=paths["cascadepsp"], L=900 if args.size == "real" else 256, psp_size=psp + ", " if psp else "",
            sam=paths["sam"]))  # fmt: skip
        run = work / f"e2e_run_{devices}"
        start = time.time()
        proc = subprocess.run([sys.executable, "-m", "g4seg.cli", "predict", "--config", str(config), "--output_dir", str(run)],
                              cwd=ROOT, capture_output=True, text=True)  # fmt: skip
        end = time.time()
        if proc.returncode:
            out.put("harness", f"{devices} GPU(s), strategies: {args.e2e_strategies}", f"failed: {proc.stderr.strip().splitlines()[-1:]}")
            print(proc.stderr[-4000:], flush=True)
            continue
        rates = record_rates(run, start, end)
        rates["s_per_image_steady"] = round(1 / rates["records_per_s"], 4)
        out.put("harness", f"{devices} GPU(s), strategies: {args.e2e_strategies}", {k: round(v, 3) if isinstance(v, float) else v for k, v in rates.items()})
    if len(counts) == 1:
        out.put("harness", "1 vs N GPUs", f"not measured: {gpus or 'no'} GPU(s) on this machine")
    else:
        one, many = (out.data["harness"][f"{d} GPU(s), strategies: {args.e2e_strategies}"] for d in counts)
        if isinstance(one, dict) and isinstance(many, dict):
            out.put("harness", "1 vs N GPUs", {"gpus": gpus, "end_to_end_x": round(one["end_to_end_s"] / many["end_to_end_s"], 2),
                                               "steady_x": round(many["records_per_s"] / one["records_per_s"], 2)})  # fmt: skip


STAGE_STRATEGIES = {
    "g4seg": ["g4seg"],
    "densecrf": ["densecrf"],
    "g4seg + densecrf + g4seg+crf": ["g4seg", "densecrf", "g4seg+crf"],
}
STRATEGY_NODES = {
    "g4seg": "{{name: g4seg, injector: emi, refiners: [{correspondence}]}}",
    "densecrf": "{{name: densecrf, refiners: [{{class_path: strategies.refiners.DenseCRF}}]}}",
    "g4seg+crf": "{{name: g4seg+crf, injector: emi, refiners: [{correspondence}, {{class_path: strategies.refiners.DenseCRF}}]}}",
}


def stages(out: Results, paths: dict, args, work: Path) -> None:
    """Whole `g4seg predict` runs in this process with the per-stage profile attached
    (scripts/stage_profile.py): G4Seg (EMI + SCA/CF) alone, DenseCRF alone (its worker
    pool), and both with their chain, each on --e2e-images images; steady s/image, the
    stage table, GPU busy."""
    import stage_profile

    data = work / "stage_data"
    if not data.exists():
        link_farm(ROOT / "data" / "real" / "voc2012", data, args.e2e_images)
    gpu = args.device.startswith("cuda")
    correspondence = ("{{class_path: strategies.refiners.Correspondence, init_args: {{clip: {clip}, {size}preset: open_vocabulary}}}}"
                      .format(clip=paths["clip"], size="image_size: 448, " if args.size == "real" else ""))  # fmt: skip
    for name, strategies in STAGE_STRATEGIES.items():
        config = work / f"stages_{len(strategies)}_{strategies[0]}.yaml"
        nodes = "\n".join("  - " + STRATEGY_NODES[s].format(correspondence=correspondence) for s in strategies)
        config.write_text(f"""seed_everything: 0
trainer: {{accelerator: {"gpu" if gpu else "cpu"}, devices: 1}}
{DATA.format(data=data, batch=args.batch, workers=args.loader_workers)}model:
  injectors:
    emi: {{class_path: strategies.injectors.AttentionInjection, init_args: {{model: {paths["sd"]}, timestep: 400, mode: add, alpha: 10.0}}}}
  strategies:
  - {{name: identity, refiners: [{{class_path: strategies.refiners.Identity}}]}}
{nodes}
""")
        start = time.time()
        try:
            profile = stage_profile.profile_predict(["--config", str(config), "--output_dir", str(work / f"stages_run_{len(strategies)}_{strategies[0]}"),
                                                     "--scoring.bootstrap", "0", "--scoring.gallery", "0"])  # fmt: skip
        except BaseException as e:  # noqa: BLE001 - one section's failure is a figure too
            out.put("stages", name, f"failed: {type(e).__name__}: {e}")
            continue
        profile["end_to_end_s"] = round(time.time() - start, 1)
        out.put("stages", name, profile)
        print(stage_profile.table(profile), flush=True)


def compiled(out: Results, samples, paths: dict, args) -> None:
    """torch.compile of the UNet (default mode): first-call seconds and the speed after."""
    base = injector("none", paths, args.device)
    inj = injector("none", paths, args.device)
    inj.unet = torch.compile(inj.unet)
    start = time.perf_counter()
    inj.generate(samples)
    first = time.perf_counter() - start
    ref, var = timed([lambda: base.generate(samples), lambda: inj.generate(samples)], args.device, args.repeats)
    out.put("compile", "none injector, UNet compiled", {"first_call_s": round(first, 1), "s_per_image": round(var / len(samples), 4),
                                                        "vs_eager": round(ref / var, 2)})  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=["real", "tiny"], default="real")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", default="gpu_check")
    parser.add_argument("--images", type=int, default=4, help="images per generate() call")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--e2e-images", type=int, default=48)
    parser.add_argument("--flow-images", type=int, default=2, help="images per call for the SD3 / Flux shapes")
    parser.add_argument("--e2e-strategies", choices=["all", "g4seg"], default="all")
    parser.add_argument("--batch", type=int, default=4, help="the harness runs' batch size")
    parser.add_argument("--loader-workers", type=int, default=4, help="the harness runs' DataLoader workers")
    sections = ["stages", "generation", "refiners", "producers", "flow", "harness", "compile"]
    parser.add_argument("--only", nargs="+", default=sections, choices=sections)
    args = parser.parse_args()
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    out = Results(out_dir / "gpu_check.json")
    import diffusers

    gpu = torch.cuda.get_device_name() if args.device.startswith("cuda") else platform.processor() or "cpu"
    out.put("env", "machine", {"device": gpu, "gpus": torch.cuda.device_count(), "torch": torch.__version__,
                               "diffusers": diffusers.__version__, "size": args.size, "images_per_call": args.images,
                               "attention": "torch SDPA (diffusers AttnProcessor2_0) unless an injector swaps it"})  # fmt: skip
    from datamodules import VOCFolderDataModule

    dm = VOCFolderDataModule(str(ROOT / "data" / "demo" / "voc2012"))
    dm.setup()
    samples = [dm.dataset[i] for i in range(args.images)]
    three = dm.dataset[dm.dataset.ids.index(THREE_CLASSES)]
    with tempfile.TemporaryDirectory() as tmp:
        paths: dict = {}
        if set(args.only) - {"producers", "flow"}:
            start = time.perf_counter()
            paths = save_models(args.size, args.device, Path(tmp))
            out.put("env", "models built and saved (s)", round(time.perf_counter() - start, 1))
        for section, fn in (("stages", lambda: stages(out, paths, args, Path(tmp))),
                            ("generation", lambda: generation(out, samples, three, paths, args)),
                            ("refiners", lambda: refiners(out, samples, paths, args)),
                            ("producers", lambda: producers(out, samples, args)),
                            ("flow", lambda: flow(out, samples[: args.flow_images], args)),
                            ("harness", lambda: harness(out, paths, args, Path(tmp))),
                            ("compile", lambda: compiled(out, samples, paths, args))):  # fmt: skip
            if section in args.only:
                try:
                    fn()
                except Exception as e:
                    out.put(section, "error", f"{type(e).__name__}: {e}")
                    import traceback

                    traceback.print_exc()


if __name__ == "__main__":
    main()
