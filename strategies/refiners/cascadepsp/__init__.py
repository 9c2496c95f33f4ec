"""CascadePSP-style refiner: the network, its global/local inference and the Refiner."""

from __future__ import annotations

from pathlib import Path

import torch

from g4seg.interfaces import Refiner
from g4seg.errors import ConfigError, ModelNotFoundError
from g4seg.types import ClassProbs, Generated, Sample

from .inference import PAD, refine_masks
from .network import RefinementNetwork, load_official, load_official_state

OFFICIAL_HINT = (
    "Download the official CascadePSP weights (GitHub release v1.0 of hkchengrex/CascadePSP, file 'model', "
    "MD5 7478d4a9c42ab52beb6d7e9683402fe0) on a machine with internet access and set `weights:` to its path."
)


def tiny_network(seed: int = 0) -> RefinementNetwork:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return RefinementNetwork(base=8, layers=(1, 1, 1, 1))


_LOADED: dict[tuple, RefinementNetwork] = {}


def shared_network(weights: str, base: int, layers: tuple[int, ...]) -> RefinementNetwork:
    """One network per checkpoint in a process (CascadePSP alone and chained after G4Seg share it)."""
    if weights == "tiny":
        key: tuple = ("tiny",)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelNotFoundError(f"{weights}: CascadePSP checkpoint not found. {OFFICIAL_HINT}")
        key = (str(path), path.stat().st_mtime_ns, path.stat().st_size, base, layers)  # a rewritten file is new
    if key not in _LOADED:
        if weights == "tiny":
            net = tiny_network()
        else:
            net = RefinementNetwork(base, layers)
            load_checkpoint(net, str(path))
        _LOADED[key] = net.eval().requires_grad_(False)
    return _LOADED[key]


class CascadePSP(Refiner):
    """Each foreground class's current mask (argmax) refined by CascadePSP; the refined
    probabilities replace the class channels and background becomes 1 - max of them.

    Args:
        weights: "tiny" (random, offline), the official checkpoint file, or a checkpoint
            written by scripts/train_cascadepsp.py (a Lightning .ckpt or a state dict).
        L: max side of the global step and crop size of the local step (official 900).
        fast: global step only.
        base, layers: network size for non-official checkpoints (tiny: 8, [1, 1, 1, 1]).
    """

    def __init__(
        self,
        weights: str = "tiny",
        L: int = 900,
        fast: bool = False,
        base: int = 64,
        layers: tuple[int, int, int, int] = (3, 4, 6, 3),
    ) -> None:
        super().__init__()
        if not fast and L // 2 - 2 * PAD <= 0:
            raise ConfigError(f"CascadePSP L must exceed {4 * PAD} for the local step (or set fast: true), got L={L}")
        self.L, self.fast = L, fast
        self.random_weights = weights == "tiny"
        self.net = shared_network(weights, base, tuple(layers))

    def refine(self, sample: Sample, probs: ClassProbs, generated: Generated | None) -> ClassProbs:
        fg = probs.foreground()
        if not fg:
            return probs
        labels = probs.labels()
        masks = torch.stack([labels == c for _, c in fg])
        refined = refine_masks(self.net, sample.image, masks, self.L, self.fast)
        out = probs.probs.clone()
        for (k, _), p in zip(fg, refined):
            out[k] = p
        out[0] = 1.0 - refined.max(0).values
        return probs.with_probs(out)


def load_checkpoint(net: RefinementNetwork, path: str) -> None:
    """Official file, or a training checkpoint of scripts/train_cascadepsp.py ("net." keys)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)  # a user file: tensors and plain data only
    except Exception as e:  # noqa: BLE001 - unpickling raises many types
        raise ModelNotFoundError(f"{path}: not a readable CascadePSP checkpoint ({type(e).__name__}). {OFFICIAL_HINT}") from None
    try:
        if isinstance(state, dict) and "state_dict" in state:
            state = {k.removeprefix("net."): v for k, v in state["state_dict"].items() if k.startswith("net.")}
            net.load_state_dict(state, strict=True)
        elif isinstance(state, dict):
            load_official_state(net, state)
        else:
            raise RuntimeError(f"holds a {type(state).__name__}, not a state dict")
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(
            f"{path}: does not fit a CascadePSP network of base {net.base}, layers {list(net.layers)} ({first}); "
            "set base/layers to the checkpoint's (official: 64, [3, 4, 6, 3]; tiny: 8, [1, 1, 1, 1])"
        ) from None


__all__ = ["CascadePSP", "RefinementNetwork", "load_official", "refine_masks", "tiny_network"]
