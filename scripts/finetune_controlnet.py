"""Fine-tune the segmentation ControlNet on a dataset's ground truth, with Trainer.fit.

    python scripts/finetune_controlnet.py --config configs/finetune/controlnet_voc.yaml
    python scripts/finetune_controlnet.py --config configs/finetune/controlnet_voc.yaml \\
        --trainer.devices 4 --trainer.strategy ddp              # DDP through Lightning
    python scripts/finetune_controlnet.py --config configs/finetune/tiny.yaml   # offline dry run
    python scripts/finetune_controlnet.py --config ... --ckpt_path last        # resume

Writes OUTPUT_DIR/controlnet (a diffusers ControlNet folder with g4seg_finetune.json: the
settings, data ids and losses; use it as `ControlNetInjection(controlnet: OUTPUT_DIR/controlnet)`),
OUTPUT_DIR/logs/metrics.csv (train_loss per step, val_loss before training and at each
validation; TensorBoard logs too when tensorboard is installed) and OUTPUT_DIR/checkpoints
(Lightning checkpoints of the ControlNet and optimizer, for --ckpt_path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from g4seg.run.failures import report_failure  # noqa: E402
from strategies.injectors.controlnet_training.cli import main  # noqa: E402

if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - one line for what a user can fix, a traceback for bugs
        sys.exit(report_failure(e))
