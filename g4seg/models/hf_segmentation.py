"""Semantic-segmentation models of `transformers` (SegFormer, UperNet, DPT, BEiT: per-pixel
logits; Mask2Former, MaskFormer, OneFormer: mask and class queries) as per-class
probabilities at the image's size, the way their own `post_process_semantic_segmentation`
scores pixels before its argmax.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from . import hub

HF_SEG_GET = ("hf download nvidia/segformer-b1-finetuned-ade-512-512 --local-dir segformer-b1-ade "
              "(Table V; or facebook/mask2former-swin-tiny-ade-semantic, any transformers semantic-segmentation model)")
TINY = ("tiny-segformer", "tiny-mask2former")
QUERY_SIZE = (384, 384)  # Mask2Former's post-processing upsamples the mask queries to this first


def load_segmenter(model: str, labels: list[str]):
    """(model, image processor, random weights?) from a local folder or a cached hub id; the
    tiny ones are random, built from configs, with `labels` as their classes."""
    import transformers as tf

    if model in TINY:
        from .tiny import tiny_segmenter

        return (*tiny_segmenter(model, labels), True)
    hub.require_local(model, "folder", "the segmentation model", HF_SEG_GET, "model")
    try:
        net = tf.AutoModelForSemanticSegmentation.from_pretrained(model)
    except ValueError:  # query-based models are "universal segmentation" in transformers
        try:
            net = tf.AutoModelForUniversalSegmentation.from_pretrained(model)
        except hub.load_errors() as e:
            raise hub.missing(model, f"cannot load: {hub.why(e)}", "a segmentation model", HF_SEG_GET, "model") from None
    except hub.load_errors() as e:
        raise hub.missing(model, f"cannot load: {hub.why(e)}", "a segmentation model", HF_SEG_GET, "model") from None
    try:
        processor = tf.AutoImageProcessor.from_pretrained(model)
    except hub.load_errors() as e:
        raise hub.missing(model, f"no image processor ({hub.why(e)})", "the model folder with its "
                          "preprocessor_config.json", HF_SEG_GET, "model") from None  # fmt: skip
    return net, processor, False


@torch.no_grad()
def semantic_probs(net, processor, image: np.ndarray) -> torch.Tensor:
    """[M, H, W] probabilities over the model's M classes at the image's size."""
    device = next(net.parameters()).device
    inputs = processor(images=[image], return_tensors="pt")
    out = net(pixel_values=inputs["pixel_values"].to(device))
    size = image.shape[:2]
    logits = getattr(out, "logits", None)
    if logits is not None and logits.ndim == 4:
        return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)[0].softmax(0).cpu()
    classes = out.class_queries_logits.float().softmax(-1)[..., :-1]  # the last class is "no object"
    masks = F.interpolate(out.masks_queries_logits.float(), size=QUERY_SIZE, mode="bilinear", align_corners=False).sigmoid()
    scores = torch.einsum("bqc,bqhw->bchw", classes, masks)
    scores = F.interpolate(scores, size=size, mode="bilinear", align_corners=False)[0]
    return (scores / scores.sum(0, keepdim=True).clamp_min(1e-12)).cpu()
