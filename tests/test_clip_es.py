"""CLIP-ES seeds, stage by stage against computations that are not the producer's: the
Grad-CAM against the `grad-cam` package (pytorch_grad_cam, whose modified copy CLIP-ES
ships) on open_clip's own modules; the attention weights against softmax(QK^T / sqrt(d))
from the projection weights; the boxes, the affinity and the refinement against NumPy /
SciPy re-derivations of CLIP-ES's published code; then end to end on the bundled images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import nn

pytest.importorskip("pytorch_grad_cam")


@pytest.fixture(scope="module")
def producer():
    from datamodules import CLIPES

    return CLIPES(clip="tiny")


@pytest.fixture(scope="module")
def square(real_voc):
    """A real image at the tiny CLIP's native 64 x 64 (an 8 x 8 grid): the positional
    embedding needs no interpolation, so open_clip's own embedding path applies."""
    import cv2

    from g4seg.images import read_image

    return cv2.resize(read_image(sorted((real_voc / "JPEGImages").glob("*.jpg"))[0]), (64, 64), interpolation=cv2.INTER_AREA)


class LastLayer(nn.Module):
    """CLIP-ES's `forward_last_layer` written on open_clip's own block forward: probabilities
    over [classes; background words] from the tokens entering the last block."""

    def __init__(self, clip, text):
        super().__init__()
        self.clip, self.text = clip, text

    def forward(self, tokens):
        v = self.clip.visual
        x = v.transformer.resblocks[-1](tokens)
        pooled = v.ln_post(x)[:, 1:].mean(1) @ v.proj
        return (self.clip.logit_scale.exp() * F.normalize(pooled, dim=-1) @ self.text.T).softmax(-1)


def test_grad_cam_matches_the_grad_cam_package(producer, square):
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    from g4seg.models.tiny import tiny_clip

    class GridCAM(GradCAM):  # the package resizes to the input's size; tokens have none
        def get_target_width_height(self, input_tensor):
            return 8, 8

    clip = tiny_clip()  # the same seeded weights as the producer's, with gradients on
    with torch.no_grad():  # CLIP-ES stores its positional embedding in float16, at every size
        clip.visual.positional_embedding.copy_(clip.visual.positional_embedding.half().float())
    fg, bg = producer.text_features()
    fg = fg[[0, 14, 6]]  # three classes: aeroplane, person, car
    x = producer.image_tensor(square)
    ours, _ = producer.grad_cams(x, fg, bg)
    tokens = clip.visual._embeds(x)
    for block in clip.visual.transformer.resblocks[:-1]:
        tokens = block(tokens)
    model = LastLayer(clip, torch.cat([fg, bg]))
    to_grid = lambda t: t[:, 1:].reshape(t.shape[0], 8, 8, -1).permute(0, 3, 1, 2)  # noqa: E731
    with GridCAM(model=model, target_layers=[clip.visual.transformer.resblocks[-1].ln_1], reshape_transform=to_grid) as cam:
        for k in range(3):
            theirs = cam(input_tensor=tokens.detach(), targets=[ClassifierOutputTarget(k)])[0]
            assert theirs.max() > 0.99  # a real map, not all zeros
            np.testing.assert_allclose(ours[k], theirs, atol=2e-5)


def test_block_and_attention_weights_follow_open_clip_and_the_equations(producer, square):
    v = producer.model.visual
    with torch.no_grad():
        tokens = v._embeds(producer.image_tensor(square))
        block = v.transformer.resblocks[0]
        out, weights = producer.block_with_weights(block, tokens)
        torch.testing.assert_close(out, block(tokens), atol=1e-6, rtol=1e-5)  # open_clip's own forward
        attn, y = block.attn, block.ln_1(tokens)[0]
        d, heads = attn.embed_dim, attn.num_heads
        q, k, _ = (y @ attn.in_proj_weight.T + attn.in_proj_bias).split(d, dim=-1)
        q, k = (t.reshape(-1, heads, d // heads).transpose(0, 1) for t in (q, k))
        expected = ((q @ k.transpose(1, 2)) / (d // heads) ** 0.5).softmax(-1).mean(0)
    torch.testing.assert_close(weights[0], expected, atol=1e-6, rtol=1e-5)


def numpy_boxes(cam: np.ndarray, threshold: float) -> np.ndarray:
    """scoremap2bbox's boxes from 8-connected components (SciPy), not from OpenCV contours."""
    h, w = cam.shape
    gray = (cam * 255).astype(np.uint8)
    components, _ = ndimage.label(gray > int(threshold * gray.max()), structure=np.ones((3, 3)))
    mask = np.zeros((h, w), np.float32)
    for ys, xs in ndimage.find_objects(components):
        mask[ys.start : min(ys.stop, h - 1), xs.start : min(xs.stop, w - 1)] = 1
    return mask


def numpy_refine(cam: np.ndarray, attention: np.ndarray, size: tuple[int, int], threshold: float = 0.4) -> np.ndarray:
    import cv2

    t = attention.astype(np.float64)
    for _ in range(3):  # one round, then CLIP-ES's two more
        t = t / t.sum(0, keepdims=True)
        t = t / t.sum(1, keepdims=True)
    t = (t + t.T) / 2
    t = (t @ t) * numpy_boxes(cam, threshold).reshape(1, -1)
    refined = (t @ cam.reshape(-1, 1).astype(np.float64)).reshape(cam.shape)
    refined = (refined - refined.min()) / (1e-7 + (refined - refined.min()).max())
    return cv2.resize(refined.astype(np.float32), size)


def test_boxes_affinity_and_refinement_match_a_numpy_rederivation(producer, real_voc):
    from datamodules import VOCFolderDataModule
    from datamodules.clip_es import affinity, box_mask

    rng = np.random.default_rng(0)
    for _ in range(20):  # blobs with holes, touching the borders, several components
        cam = ndimage.gaussian_filter(rng.random((24, 31)), 2.0)
        cam = (cam - cam.min()) / (cam.max() - cam.min())
        for threshold in (0.4, 0.7):
            np.testing.assert_array_equal(box_mask(cam, threshold), numpy_boxes(cam, threshold))
    from datamodules import CLIPES

    coco = CLIPES(clip="tiny", release="coco")
    assert (producer.box_threshold, coco.box_threshold) == (0.4, 0.7)
    dm = VOCFolderDataModule(str(real_voc), limit=2)
    dm.setup()
    for i in range(2):
        s = dm.dataset[i]
        present = [int(c) for c in np.unique(s.gt.numpy()) if c not in (0, 255)]
        fg, bg = producer.text_features()
        cams, attention = producer.grad_cams(producer.image_tensor(s.image.numpy()), fg[[c - 1 for c in present]], bg)
        h, w = s.size
        trans = affinity(attention)
        for cam in cams:
            np.testing.assert_allclose(producer.refine(cam, trans, (w, h)),
                                       numpy_refine(cam, attention.numpy(), (w, h)), atol=1e-4)  # fmt: skip
            np.testing.assert_allclose(coco.refine(cam, trans, (w, h)),  # generate_cams_coco14.py's 0.7
                                       numpy_refine(cam, attention.numpy(), (w, h), 0.7), atol=1e-4)  # fmt: skip


def test_seeds_on_the_bundled_images_under_inference_mode(producer, real_voc):
    """As in Trainer.predict: the Grad-CAM's gradients still work under inference mode."""
    from datamodules import VOCFolderDataModule

    dm = VOCFolderDataModule(str(real_voc), limit=3)
    dm.setup()
    for i in range(3):
        s = dm.dataset[i]
        with torch.inference_mode():
            out = producer.produce([s])[0]
        gt_classes = sorted(int(c) for c in np.unique(s.gt.numpy()) if c not in (0, 255))
        assert out.class_ids.tolist() == [0, *gt_classes]
        assert out.probs.shape == (len(gt_classes) + 1, *s.size)
        cams = out.probs[1:]
        torch.testing.assert_close(out.probs[0], 1 - cams.max(0).values)
        assert float(cams.min()) >= 0 and float(cams.max()) <= 1 and float(cams.amax(dim=(1, 2)).min()) > 0.9
        assert torch.equal(cams, cams.half().float())  # float16 values, as CLIP-ES saves its CAMs
        assert any("labels from the ground truth" in n for n in out.notes)


def test_an_image_without_labels_and_a_dataset_of_other_classes(producer):
    from g4seg.errors import ConfigError

    image = np.zeros((40, 50, 3), np.uint8)
    out = producer.make("empty", image, np.zeros((40, 50), np.int64), 21)
    assert out.class_ids.tolist() == [0] and torch.equal(out.probs, torch.ones(1, 40, 50))
    assert any("background only" in n for n in out.notes)
    with pytest.raises(ConfigError, match="20 class names .voc. but the dataset has 80"):
        producer.make("x", image, np.zeros((40, 50), np.int64), 81)


def numpy_bilinear(grid: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """Bilinear resampling with half-pixel centres (align_corners=False), edges clamped."""

    def axis(n_in, n_out):
        src = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, None)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    (y0, y1, fy), (x0, x1, fx) = axis(grid.shape[0], out_h), axis(grid.shape[1], out_w)
    rows = grid[y0] * (1 - fy)[:, None, None] + grid[y1] * fy[:, None, None]
    return rows[:, x0] * (1 - fx)[None, :, None] + rows[:, x1] * fx[None, :, None]


def test_image_size_and_positional_embedding_as_clip_es_prepares_them(producer, real_voc):
    """Image: torchvision's Resize((h', w'), BICUBIC) on the PIL image, h' and w' rounded up
    to the patch; positional grid: bilinearly upsampled and stored as float16 (CLIP-ES's
    `upsample_pos_emb` ends in `.half()`)."""
    from PIL import Image
    from torchvision import transforms

    from g4seg.images import read_image
    from g4seg.models.clip import CLIP_MEAN, CLIP_STD

    image = read_image(sorted((real_voc / "JPEGImages").glob("*.jpg"))[1])
    h, w = image.shape[:2]
    size = (-(-h // 8) * 8, -(-w // 8) * 8)
    reference = transforms.Compose([transforms.Resize(size, interpolation=transforms.InterpolationMode.BICUBIC),
                                    transforms.ToTensor(), transforms.Normalize(CLIP_MEAN, CLIP_STD)])  # fmt: skip
    torch.testing.assert_close(producer.image_tensor(image)[0], reference(Image.fromarray(image)), atol=1e-6, rtol=0)
    pos = producer.model.visual.positional_embedding.detach()
    gh, gw = size[0] // 8, size[1] // 8
    got = producer.positional(gh, gw).detach()
    torch.testing.assert_close(got[0], pos[0].half().float())
    expected = numpy_bilinear(pos[1:].numpy().reshape(8, 8, -1), gh, gw).reshape(gh * gw, -1)
    np.testing.assert_allclose(got[1:].numpy(), expected.astype(np.float16).astype(np.float32), atol=1e-6, rtol=1e-3)
    assert torch.equal(got, got.half().float())  # whole float16 values, the CLS token's too
