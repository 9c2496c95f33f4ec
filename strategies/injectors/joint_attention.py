"""Explicit Mask Injection for MMDiT joint attention (SD3's and Flux's transformer blocks).

An MMDiT block attends once over [image tokens; text tokens]. G4Seg's two masks become one
additive bias on the image-query rows of that joint score matrix:
  * image -> image columns: Eq. 4's self mask, M(i, j) = 1 for latent patches i and j both
    inside the class's mask;
  * image -> text columns: Eq. 3's cross mask, M(i, j) = 1 for patch i inside the mask and
    j a class-name token of the prompt;
  * text-query rows: no bias (the prompt's own tokens are not laid out in the image).
softmax((QK^T + alpha M) / sqrt(d)) = SDPA with attn_mask = alpha M / sqrt(d), as the UNet's
"add" mode. QK-norm and the projections are diffusers' `JointAttnProcessor2_0` steps, kept
as they are; with alpha = 0 the output is that processor's, bit for bit.

Which text tokens count: the class-name tokens of every prompt in the text sequence: SD3's
CLIP prompt (its first 77 positions) and its T5 prompt after them (when T5 is loaded); Flux's
T5 prompt, the whole of its text sequence.

Flux's own processor passes an `attention_mask` on to its attention, in its double- and
single-stream blocks alike (both see [text; image]), so Flux needs no processor of ours: the
bias goes in through `joint_attention_kwargs`. SD3's `JointAttnProcessor2_0` takes no mask,
hence `JointEMIProcessor`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .attention import LayoutMasks, split_heads


def joint_bias(layout: LayoutMasks, alpha: float, n_image: int, n_text: int, scale: float, dtype: torch.dtype,
               text_first: bool = False) -> torch.Tensor:  # fmt: skip
    """[J, 1, N, N] additive scores, N = Ni + Nt: alpha * scale * M on the image-query rows
    (Eq. 4 on image columns, Eq. 3 on the class-token columns), 0 on the text-query rows.
    SD3 orders the sequence [image; text], Flux [text; image] (`text_first`)."""
    mask = layout.at(n_image)  # [J, Ni]
    tokens = torch.zeros(mask.shape[0], n_text, device=mask.device, dtype=mask.dtype)
    given = layout.tokens[:, :n_text].to(mask.dtype)
    tokens[:, : given.shape[1]] = given
    columns = torch.cat([tokens, mask] if text_first else [mask, tokens], dim=1)  # [J, N]
    rows = alpha * scale * mask[:, :, None] * columns[:, None, :] * layout.active[:, None, None]  # [J, Ni, N]
    text_rows = torch.zeros(mask.shape[0], n_text, n_image + n_text, device=mask.device, dtype=mask.dtype)
    return torch.cat([text_rows, rows] if text_first else [rows, text_rows], dim=1)[:, None].to(dtype)


class JointEMIProcessor:
    """`JointAttnProcessor2_0` with the layout bias on the image-query rows."""

    def __init__(self, layout: LayoutMasks, alpha: float) -> None:
        self.layout, self.alpha = layout, alpha

    def bias(self, n_image: int, n_text: int, scale: float, dtype: torch.dtype) -> torch.Tensor:
        return joint_bias(self.layout, self.alpha, n_image, n_text, scale, dtype)

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, *args, **kwargs):
        residual = hidden_states
        batch = hidden_states.shape[0]
        query, key, value = split_heads(attn, batch, attn.to_q(hidden_states), attn.to_k(hidden_states),
                                        attn.to_v(hidden_states))  # fmt: skip
        head_dim = query.shape[-1]
        n_text = 0
        if encoder_hidden_states is not None:
            q2, k2, v2 = split_heads(attn, batch, *(proj(encoder_hidden_states) for proj in (attn.add_q_proj, attn.add_k_proj,
                                     attn.add_v_proj)), norms=(attn.norm_added_q, attn.norm_added_k))  # fmt: skip
            n_text = q2.shape[2]
            query, key, value = torch.cat([query, q2], dim=2), torch.cat([key, k2], dim=2), torch.cat([value, v2], dim=2)
        bias = None
        if self.alpha != 0:
            bias = self.bias(residual.shape[1], n_text, attn.scale, query.dtype)
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=bias, dropout_p=0.0, is_causal=False)
        out = out.transpose(1, 2).reshape(batch, -1, attn.heads * head_dim).to(query.dtype)
        if encoder_hidden_states is not None:
            out, encoder_hidden_states = out[:, : residual.shape[1]], out[:, residual.shape[1] :]
            if not attn.context_pre_only:
                encoder_hidden_states = attn.to_add_out(encoder_hidden_states)
        out = attn.to_out[1](attn.to_out[0](out))
        return (out, encoder_hidden_states) if encoder_hidden_states is not None else out
