"""Seconds per ControlNet fine-tuning step and peak memory, at SD 1.5's shapes (random weights:
the cost does not depend on them) or with the tiny models.

    python scripts/benchmark_finetune.py                       # SD 1.5 shapes, CPU, batch 1, fp32
    python scripts/benchmark_finetune.py --device cuda --batch 4 --precision fp16 --checkpointing
    python scripts/benchmark_finetune.py --size tiny --resolution 128

The SD 1.5-shaped parts (860 M UNet, 123 M CLIP-L text encoder, 84 M VAE; the ControlNet
from the UNet, 361 M) are saved as a diffusers folder and read back through the harness's
loader; each step is the training step Trainer.fit runs (`ControlNetFineTuning.diffusion_loss`,
backward, AdamW), on examples of the bundled images.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from g4seg.precision import autocast  # noqa: E402
from strategies.injectors.controlnet_training import ControlNetFineTuning, ControlNetTrainingData  # noqa: E402
from strategies.injectors.controlnet_training.examples import collate  # noqa: E402


def save_sd15_shapes(folder: Path) -> None:
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from g4seg.models.diffusion import clip_tokenizer

    UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8).save_pretrained(folder / "unet")
    AutoencoderKL(block_out_channels=(128, 256, 512, 512), layers_per_block=2, latent_channels=4, sample_size=512,
                  down_block_types=("DownEncoderBlock2D",) * 4,
                  up_block_types=("UpDecoderBlock2D",) * 4).save_pretrained(folder / "vae")  # fmt: skip
    CLIPTextModel(CLIPTextConfig(vocab_size=49408, hidden_size=768, intermediate_size=3072, num_attention_heads=12,
                                 num_hidden_layers=12, hidden_act="quick_gelu")).save_pretrained(folder / "text_encoder")  # fmt: skip
    clip_tokenizer().save_pretrained(folder / "tokenizer")
    DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012, num_train_timesteps=1000,
                  clip_sample=False).save_pretrained(folder / "scheduler")  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=["sd15", "tiny"], default="sd15")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--resolution", type=int, default=512)
    p.add_argument("--precision", choices=["fp32", "fp16", "bf16"], default="fp32")
    p.add_argument("--checkpointing", action="store_true", help="gradient checkpointing")
    p.add_argument("--steps", type=int, default=3, help="timed steps (after one warm-up step)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        source = "tiny"
        if args.size == "sd15":
            source = str(Path(tmp) / "sd15-shaped")
            save_sd15_shapes(Path(source))
        model = ControlNetFineTuning(model=source, gradient_checkpointing=args.checkpointing, learning_rate=1e-5)
        model = model.to(args.device)
        data = ControlNetTrainingData(str(ROOT / "data" / "demo" / "voc2012"), val_count=0, resolution=args.resolution,
                                      batch_size=args.batch, num_workers=0)  # fmt: skip
        data.setup()
        optimizer = model.configure_optimizers()
        params = sum(p.numel() for p in model.controlnet.parameters())
        times = []
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        for step in range(args.steps + 1):
            batch = collate([data.train[step * args.batch + i] for i in range(args.batch)])
            batch = {k: v.to(args.device) if torch.is_tensor(v) else v for k, v in batch.items()}
            start = time.perf_counter()
            with autocast(args.precision, torch.device(args.device)):
                loss = model.diffusion_loss(batch, step)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.controlnet.parameters(), 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
        result = {"size": args.size, "device": args.device, "batch": args.batch, "resolution": args.resolution,
                  "precision": args.precision, "gradient_checkpointing": args.checkpointing,
                  "controlnet_parameters": params, "s_per_step": sum(times[1:]) / args.steps,
                  "first_step_s": times[0], "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}  # fmt: skip
        if args.device.startswith("cuda"):
            result["peak_gpu_gib"] = torch.cuda.max_memory_allocated() / 2**30
        print(json.dumps(result))


if __name__ == "__main__":
    main()
