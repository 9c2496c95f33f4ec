"""Segmentation-ControlNet injection: the coarse mask painted as an ADE20K seg map.

The class's pixels get the ADE20K palette colour of its ADE20K counterpart (see
`ade20k.py`), the rest is black; the ControlNet's residuals join the same single UNet
call as in every other injector.
"""

from __future__ import annotations

import torch

from g4seg.errors import ConfigError
from g4seg.models.diffusion import CONTROLNET_REPO
from g4seg.models.hub import hub_command

from .ade20k import ade20k_index, ade20k_palette
from .generation import DiffusionInjector, Jobs


def condition_image(masks: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """[J, 3, R, R] in [0, 1]: colour j where mask j is set, black elsewhere."""
    return masks[:, None] * colours[:, :, None, None]


class ControlNetInjection(DiffusionInjector):
    """Args:
        controlnet: "tiny" (with model "tiny"), a local folder or hub id of an SD1.5 seg
            ControlNet (default lllyasviel/control_v11p_sd15_seg, with an SD1.5 base model).
        conditioning_scale: weight of the ControlNet residuals.
        (the rest as in DiffusionInjector)
    """

    FILES_NEEDED = {**DiffusionInjector.FILES_NEEDED,
                    "controlnet": f"the segmentation ControlNet: {hub_command(CONTROLNET_REPO)}"}  # fmt: skip

    def __init__(self, controlnet: str = "tiny", conditioning_scale: float = 1.0, **kwargs) -> None:
        self.controlnet_source = controlnet
        super().__init__(**kwargs)
        if self.models_info.is_sdxl:
            raise ConfigError("ControlNetInjection supports SD 1.x/2.x base models, not SDXL")
        self.conditioning_scale = conditioning_scale

    @staticmethod
    def colours(jobs: Jobs) -> torch.Tensor:
        palette = ade20k_palette()
        return torch.tensor([palette[ade20k_index(name)] for name in jobs.names], dtype=torch.float32) / 255

    def unet_inputs(self, jobs: Jobs, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> dict:
        cond = condition_image(jobs.masks, self.colours(jobs)).to(x_t.device, self.controlnet.dtype)
        down, mid = self.controlnet(
            x_t.to(self.controlnet.dtype), t, encoder_hidden_states=text, controlnet_cond=cond,
            conditioning_scale=self.conditioning_scale, return_dict=False,
        )  # fmt: skip
        return {"down_block_additional_residuals": down, "mid_block_additional_residual": mid}
