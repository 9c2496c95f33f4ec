"""Explicit Mask Injection (EMI): the coarse mask steers the UNet's attention.

Installed as diffusers attention processors on the UNet's attention modules for the one
call and restored afterwards (VAE and ControlNet attention are never touched, unlike
DenseDiffusion's global patch of `Attention.__call__`).

Two modulations of the attention logits s = QK^T / sqrt(d), with M the layout mask at the
attention's resolution:
  * "add" (the paper's formula): A' = softmax((QK^T + alpha * M) / sqrt(d)).
    Cross-attention: M(i, j) = 1 for pixel i inside the mask and j a class-name token.
    Self-attention: M(i, j) = 1 for pixels i and j both inside the mask.
  * "densediffusion", as naver-ai/DenseDiffusion's `mod_forward` does it: on the scores
    s (already scaled), with each query row's max and min taken before the change,
        s += M+ * r * (max - s),   s -= M- * r * (s - min),   M- = 1 - M+,
    r = w * treg * size_reg, w = creg (cross) or sreg (self),
    size_reg = 1 - sizereg * (pixels in the query pixel's segment) / resolution^2.
    Cross: M+ = (pixel in the mask) x (class-name token), so every other token, start,
    end and padding included, is pushed down everywhere, and the class tokens outside the
    mask. Self: M+ = pixel pairs in the same segment (mask or background).
    treg: DenseDiffusion uses (t/1000)^5 and modulates only the first 30% of 50 DDIM
    steps (t = 981 ... 701), where treg averages 0.47; at G4Seg's single step t = 400 the
    schedule would give 0.01 and change almost nothing. So `treg` defaults to that mean,
    0.47, the strength DenseDiffusion applies while it shapes the layout; `treg: null`
    uses the schedule (t_s/1000)^treg_power instead.

Under classifier-free guidance only the conditional half of the batch is modulated, as in
DenseDiffusion (`sim[size/2:]`).
"""

from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F

from g4seg.errors import ConfigError

from .generation import DiffusionInjector
from .jobs import Jobs


DD_TREG = 0.47  # mean of (t/1000)^5 over DDIM-50 timesteps 981..701, where DenseDiffusion modulates


def split_heads(attn, batch: int, query, key, value, norms=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """[B, heads, N, d] views of the projections with the module's QK-norm applied, as
    diffusers' processors prepare them; `norms`: another (q, k) pair of norms (a joint
    block's text projections use norm_added_q / norm_added_k)."""
    norm_q, norm_k = norms or (attn.norm_q, attn.norm_k)
    head_dim = key.shape[-1] // attn.heads
    q, k, v = (x.view(batch, -1, attn.heads, head_dim).transpose(1, 2) for x in (query, key, value))
    if norm_q is not None:
        q = norm_q(q)
    if norm_k is not None:
        k = norm_k(k)
    return q, k, v


class LayoutMasks:
    """The jobs' masks at every attention resolution, built once per call.

    `active` [B] marks the batch rows to modulate; the others (the unconditional half under
    guidance) get all-zero masks and strength, i.e. plain attention.
    """

    def __init__(self, jobs: Jobs, device: torch.device, active: torch.Tensor | None = None) -> None:
        self.masks = jobs.masks.to(device)  # [J, R, R]
        self.tokens = jobs.token_masks.to(device)  # [J, L]
        active = torch.ones(len(jobs), dtype=torch.bool) if active is None else active
        self.active = active.to(device).float()  # [J]
        self._cache: dict[int, torch.Tensor] = {}

    def at(self, n_pixels: int) -> torch.Tensor:
        """[J, N] mask at the square resolution with n_pixels positions."""
        if n_pixels not in self._cache:
            side = math.isqrt(n_pixels)
            if side * side != n_pixels:
                raise ValueError(f"attention over {n_pixels} positions is not a square latent grid")
            m = F.interpolate(self.masks[:, None], size=(side, side), mode="nearest")
            self._cache[n_pixels] = m.flatten(1)
        return self._cache[n_pixels]


class EMIProcessor:
    """The layout modulation as a diffusers attention processor.

    "add": the bias alpha * scale * M goes to diffusers' own `AttnProcessor2_0` as its
    additive `attention_mask`, so the attention is the library's computation with the
    paper's term added (alpha = 0 is the stock processor, bit for bit). "densediffusion"
    needs each row's max and min of the scores, so it computes the scores itself.
    """

    def __init__(self, name: str, layout: LayoutMasks, injector: AttentionInjection) -> None:
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.name, self.layout, self.inj = name, layout, injector
        self.stock = AttnProcessor2_0()

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        if attention_mask is not None:
            raise NotImplementedError("EMI does not combine with an attention_mask from the caller")
        is_cross = encoder_hidden_states is not None
        n_q = hidden_states.shape[1] if hidden_states.ndim == 3 else hidden_states.shape[2] * hidden_states.shape[3]
        n_k = encoder_hidden_states.shape[1] if is_cross else n_q
        strength = self.inj.alpha if self.inj.mode == "add" else (self.inj.creg if is_cross else self.inj.sreg)
        if strength == 0:
            return self.stock(attn, hidden_states, encoder_hidden_states, temb=temb)
        if self.inj.mode == "add":
            bias = self.add_bias(attn, n_q, n_k, is_cross).to(hidden_states.dtype)
            return self.stock(attn, hidden_states, encoder_hidden_states, attention_mask=bias, temb=temb)
        return self.modulated(attn, hidden_states, encoder_hidden_states, temb)

    def add_bias(self, attn, n_q: int, n_k: int, is_cross: bool) -> torch.Tensor:
        """[J, Nq, Nk] = alpha * scale * M: softmax(s + bias) = softmax((QK^T + alpha M) / sqrt(d))."""
        mask = self.layout.at(n_q)
        if is_cross:
            m = mask[:, :, None] * self.layout.tokens[:, None, :n_k].to(mask.dtype)
        else:
            m = mask[:, :, None] * mask[:, None, :]
        return self.inj.alpha * attn.scale * m * self.layout.active[:, None, None]

    def modulated(self, attn, hidden_states, encoder_hidden_states, temb):
        """AttnProcessor2_0's steps with DenseDiffusion's modulation of the scores."""
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            b, c, h, w = hidden_states.shape
            hidden_states = hidden_states.view(b, c, h * w).transpose(1, 2)
        is_cross = encoder_hidden_states is not None
        batch = hidden_states.shape[0]
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.to_q(hidden_states)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        if is_cross and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        q, k, v = split_heads(attn, batch, query, attn.to_k(context), attn.to_v(context))
        head_dim = q.shape[-1]
        scores = (q @ k.transpose(-1, -2)) * attn.scale
        scores = self.densediffusion(scores, self.layout.at(q.shape[2]), is_cross, k.shape[2])
        out = scores.softmax(dim=-1) @ v
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(q.dtype)
        out = attn.to_out[1](attn.to_out[0](out))
        if input_ndim == 4:
            out = out.transpose(-1, -2).reshape(b, c, h, w)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    def densediffusion(self, s: torch.Tensor, mask: torch.Tensor, is_cross: bool, n_k: int) -> torch.Tensor:
        inj = self.inj
        area = mask.mean(dim=1, keepdim=True)  # fraction of the image inside the mask, [J, 1]
        size_reg = 1.0 - inj.sizereg * torch.where(mask > 0, area, 1.0 - area)  # [J, Nq]
        if is_cross:
            pos = mask[:, :, None] * self.layout.tokens[:, None, :n_k].to(mask.dtype)
        else:
            pos = mask[:, :, None] * mask[:, None, :] + (1 - mask)[:, :, None] * (1 - mask)[:, None, :]
        neg = 1.0 - pos
        w = inj.creg if is_cross else inj.sreg
        r = w * inj.treg_value * size_reg * self.layout.active[:, None]
        r = r[:, None, :, None].to(s.dtype)  # [J, 1, Nq, 1]
        top = s.amax(dim=-1, keepdim=True)
        bottom = s.amin(dim=-1, keepdim=True)
        pos, neg = pos[:, None].to(s.dtype), neg[:, None].to(s.dtype)
        return s + pos * r * (top - s) - neg * r * (s - bottom)


class AttentionInjection(DiffusionInjector):
    """EMI injector (G4Seg's default). See the module docstring for the two modes.

    Args:
        mode: "add" or "densediffusion".
        alpha: logit boost of the "add" mode (before the 1/sqrt(d) scaling).
        creg, sreg, sizereg: DenseDiffusion's weights (its defaults 1.0, 0.3, 1.0).
        treg: time weight of the one step (default 0.47, see the module docstring);
            None = DenseDiffusion's schedule (t_s / 1000) ** treg_power.
        (the rest as in DiffusionInjector)
    """

    def __init__(
        self,
        mode: str = "add",
        alpha: float = 10.0,
        creg: float = 1.0,
        sreg: float = 0.3,
        sizereg: float = 1.0,
        treg: float | None = DD_TREG,
        treg_power: float = 5.0,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        if mode not in ("add", "densediffusion"):
            raise ConfigError(f"mode must be 'add' or 'densediffusion', got {mode!r}")
        self.mode, self.alpha = mode, alpha
        self.creg, self.sreg, self.sizereg, self.treg, self.treg_power = creg, sreg, sizereg, treg, treg_power
        if self.models_info.is_flow and mode != "add":
            raise ConfigError("EMI on SD3's / Flux's joint attention runs in mode add; densediffusion's per-row rescaling "
                              "of separate self- and cross-attention scores has no counterpart there yet")  # fmt: skip

    @property
    def treg_value(self) -> float:
        return self.treg if self.treg is not None else (self.timestep / 1000.0) ** self.treg_power

    def unet_inputs(self, jobs: Jobs, x_t: torch.Tensor, t: torch.Tensor, text: torch.Tensor) -> dict:
        """Flux: the layout bias through `joint_attention_kwargs` (its processor applies it)."""
        if not self.models_info.is_flux:
            return {}
        from .joint_attention import joint_bias

        head_dim = self.unet.config.attention_head_dim
        n_image = (x_t.shape[2] // 2) * (x_t.shape[3] // 2)
        bias = joint_bias(LayoutMasks(jobs, self.device), self.alpha, n_image, text.shape[1], head_dim**-0.5,
                          self.unet.dtype, text_first=True)  # fmt: skip
        return {"joint_attention_kwargs": {"attention_mask": bias}}

    @contextlib.contextmanager
    def injection(self, jobs: Jobs, active: torch.Tensor | None = None):
        if self.models_info.is_flux:  # the bias rides on the call's joint_attention_kwargs (unet_inputs)
            yield
            return
        saved = dict(self.unet.attn_processors)
        layout = LayoutMasks(jobs, self.device, active)
        if self.models_info.is_sd3:
            from .joint_attention import JointEMIProcessor

            self.unet.set_attn_processor(JointEMIProcessor(layout, self.alpha))
        else:
            self.unet.set_attn_processor({name: EMIProcessor(name, layout, self) for name in saved})
        try:
            yield
        finally:
            self.unet.set_attn_processor(saved)
