"""Segmentation-ControlNet injection: the coarse mask painted as an ADE20K seg map.

The class's pixels get the ADE20K palette colour of its ADE20K counterpart (see
`ade20k.py`), the rest is black; the ControlNet's residuals join the same single UNet
call as in every other injector.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from g4seg.errors import ConfigError
from g4seg.models.diffusion import CONTROLNET_REPO
from g4seg.models.hub import hub_command

from .ade20k import ade20k_index, ade20k_palette
from .generation import DiffusionInjector
from .jobs import Jobs


def condition_image(masks: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """[J, 3, R, R] in [0, 1]: colour j where mask j is set, black elsewhere."""
    return masks[:, None] * colours[:, :, None, None]


FINETUNE_INFO = "g4seg_finetune.json"  # written next to a ControlNet by scripts/finetune_controlnet.py


def finetune_info(folder: str | None) -> dict | None:
    """What a g4seg fine-tuning recorded next to a ControlNet folder, if it did."""
    path = Path(str(folder)) / FINETUNE_INFO
    try:
        return json.loads(path.read_text()) if folder and path.is_file() else None
    except (OSError, ValueError):
        return None


def class_colours(names: list[str]) -> torch.Tensor:
    """[J, 3] in [0, 1]: each class name's nearest ADE20K palette colour. The injector paints
    its masks with it and ControlNet fine-tuning its training maps, so both see one mapping."""
    palette = ade20k_palette()
    return torch.tensor([palette[ade20k_index(name)] for name in names], dtype=torch.float32) / 255


class ControlNetInjection(DiffusionInjector):
    """Args:
        controlnet: "tiny" (with model "tiny"), a local folder or hub id of an SD1.5 seg
            ControlNet (default lllyasviel/control_v11p_sd15_seg, with an SD1.5 base model).
        conditioning_scale: weight of the ControlNet residuals.
        (the rest as in DiffusionInjector)
    """

    FILES_NEEDED = {**DiffusionInjector.FILES_NEEDED,
                    "controlnet": f"the segmentation ControlNet: {hub_command(CONTROLNET_REPO)}, or the "
                                  "controlnet/ folder a fine-tuning writes (scripts/finetune_controlnet.py)"}  # fmt: skip

    def __init__(self, controlnet: str = "tiny", conditioning_scale: float = 1.0, **kwargs) -> None:
        self.controlnet_source = controlnet
        super().__init__(**kwargs)
        if self.models_info.is_sdxl:
            raise ConfigError("ControlNetInjection supports SD 1.x/2.x base models, not SDXL")
        self.conditioning_scale = conditioning_scale
        self.finetuned = finetune_info(controlnet)

    def resolved(self) -> dict:
        """A ControlNet fine-tuned here is named with what trained it (run.json, the report)."""
        out = super().resolved()
        if self.finetuned:
            info = self.finetuned
            out["controlnet_finetune"] = {"steps": info.get("steps"), "base_model": info.get("base_model"),
                                          "initial_controlnet": info.get("initial_controlnet"),
                                          "data": {k: info.get("data", {}).get(k) for k in ("root", "split", "train_examples")},
                                          "losses": info.get("losses")}  # fmt: skip
        return out

    def unet_inputs(self, jobs: Jobs, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> dict:
        cond = condition_image(jobs.masks, class_colours(jobs.names)).to(x_t.device, self.controlnet.dtype)
        down, mid = self.controlnet(
            x_t.to(self.controlnet.dtype), t, encoder_hidden_states=text, controlnet_cond=cond,
            conditioning_scale=self.conditioning_scale, return_dict=False,
        )  # fmt: skip
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
