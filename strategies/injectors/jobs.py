"""The (image, class) jobs of one batch: one UNet row each, with its layout mask, the
positions of its class tokens and its seeded noise, so that a job's result never depends on
the batch it travels in."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from g4seg.errors import ConfigError
from g4seg.seeding import stable_seed


@dataclass
class Jobs:
    """The (sample, class) pairs of one batch, in UNet batch order."""

    sample_index: list[int]  # into the batch's samples
    sample_ids: list[str]
    class_ids: list[int]
    masks: torch.Tensor  # float [J, R, R], 1 inside the class's coarse mask (at generation resolution)
    token_masks: torch.Tensor  # bool [J, L], the class-name tokens of each prompt
    prompts: list[str]
    names: list[str]  # dataset class name of each job

    def __len__(self) -> int:
        return len(self.class_ids)

    def subset(self, idx: slice) -> Jobs:
        return Jobs(self.sample_index[idx], self.sample_ids[idx], self.class_ids[idx], self.masks[idx],
                    self.token_masks[idx], self.prompts[idx], self.names[idx])  # fmt: skip

    def twice(self) -> Jobs:
        """The jobs for a guided UNet call: [unconditional; conditional], same layouts."""
        return Jobs(self.sample_index * 2, self.sample_ids * 2, self.class_ids * 2, torch.cat([self.masks] * 2),
                    torch.cat([self.token_masks] * 2), self.prompts * 2, self.names * 2)  # fmt: skip


def class_token_mask(tokenizer, prompt: str, name: str, length: int) -> torch.Tensor:
    """Positions of the class name's tokens (all of them, for multi-token names) in the prompt."""
    ids = tokenizer(prompt, padding="max_length", max_length=length, truncation=True).input_ids
    sub = tokenizer(name, add_special_tokens=False).input_ids
    mask = torch.zeros(length, dtype=torch.bool)
    for start in range(1, length - len(sub) + 1):
        if ids[start : start + len(sub)] == sub:
            mask[start : start + len(sub)] = True
            return mask
    raise ConfigError(f"class name {name!r} not found in the tokenized prompt {prompt!r}; the prompt needs {{}} for it")


def noise_for(sample_id: str, class_id: int, seed: int, shape: tuple[int, ...]) -> torch.Tensor:
    generator = torch.Generator().manual_seed(stable_seed("noise", seed, sample_id, class_id) % (2**63))
    return torch.randn(shape, generator=generator)


def clip_token_ids(tokenizer, prompts: list[str], device) -> torch.Tensor:
    """CLIP token ids padded to the tokenizer's length, as SD pipelines encode prompts (the
    injector and ControlNet fine-tuning encode theirs with it)."""
    return tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                     return_tensors="pt").input_ids.to(device)  # fmt: skip
