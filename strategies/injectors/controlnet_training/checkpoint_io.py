"""Fine-tuning checkpoints written aside and renamed into place, as the run folder's records
are: a checkpoint that fails half-way (a full disk, a kill) leaves the previous one whole,
so `--ckpt_path last` always finds a readable state; and a checkpoint that cannot be read
is one line naming the file, not a traceback from the unpickler."""

from __future__ import annotations

import io
import pickle
import zipfile

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from g4seg.errors import ConfigError
from g4seg.files import atomic_write_bytes
from g4seg.models import hub

UNREADABLE = (EOFError, pickle.UnpicklingError, zipfile.BadZipFile, RuntimeError, ValueError, KeyError)


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO takes no storage_options")
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())  # a full disk: NoSpaceError, one line; the old file stays

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        try:
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except UNREADABLE as e:
            first = hub.first_line(e, 160) or type(e).__name__
            raise ConfigError(f"{path}: not a readable checkpoint ({type(e).__name__}: {first}); delete it to start "
                              "anew, or give --ckpt_path another checkpoint") from None  # fmt: skip
