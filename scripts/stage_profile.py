"""Per-stage profile of a whole `g4seg predict`, as a user runs it: where each image's time
goes (VAE encode, UNet, VAE decode, CLIP features, matching, every refiner, the writer's
counts, PNGs and records, waiting for data) and how much of the wall time the GPU is busy.

    python scripts/benchmark.py --only stages            # tiny models on these CPUs
    bash scripts/gpu_check.sh                              # SD 2.1 shapes on a GPU (section "stages")

The main thread's stages are the `g4seg.*` ranges the code marks with
`torch.profiler.record_function`, read by torch.profiler over a window of batches after a
warm-up (CPU span and GPU kernel time of each); the writer thread keeps its own clock; the
wait for the DataLoader is the gap between one batch's end and the next one's start. GPU
busy is the union of the kernel intervals over the window's wall time. It measures; it
asserts nothing.
"""

from __future__ import annotations

import time

import torch
from lightning.pytorch.callbacks import Callback
from torch.profiler import ProfilerActivity, profile, schedule

LAST: dict = {}  # the latest profile (a run in this process writes it here)


class StageProfile(Callback):
    """Args:
    skip: batches before the window (start-up, first calls); warmup: one more, profiled and dropped.
    active: batches in the window.
    """

    def __init__(self, skip: int = 2, active: int = 4) -> None:
        self.skip, self.active = skip, active

    def on_predict_start(self, trainer, pl_module) -> None:
        self.batches: list[tuple[float, float, int]] = []
        self.wait, self.images, self._last_end = 0.0, 0, None
        self.window: dict = {}
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
        self.prof = profile(activities=activities, schedule=schedule(wait=self.skip, warmup=1, active=self.active),
                            on_trace_ready=self._ready)  # fmt: skip
        self.prof.start()
        self.run_start = time.perf_counter()

    def on_predict_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        now = time.perf_counter()
        if self._last_end is not None:
            self.wait += now - self._last_end
        self._start = now

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()  # a batch's end is where its kernels end (once per batch)
        self._last_end = time.perf_counter()
        self.batches.append((self._start, self._last_end, len(batch)))
        self.images += len(batch)
        self.prof.step()

    def _ready(self, prof) -> None:
        first = self.skip + 1
        window = self.batches[first: first + self.active]
        images = sum(n for _, _, n in window)
        wall = window[-1][1] - window[0][0]
        stages = {}
        for evt in prof.key_averages():
            if evt.key.startswith("g4seg."):
                device = getattr(evt, "device_time_total", None)
                device = getattr(evt, "cuda_time_total", 0.0) if device is None else device
                stages[evt.key[len("g4seg."):]] = {"cpu_ms_per_image": round(evt.cpu_time_total / 1e3 / images, 2),
                                                   "gpu_ms_per_image": round(device / 1e3 / images, 2)}  # fmt: skip
        intervals = sorted((e.time_range.start, e.time_range.end) for e in prof.events()
                           if e.device_type == torch.autograd.DeviceType.CUDA)  # fmt: skip
        busy, end = 0.0, None
        for a, b in intervals:  # union of the kernels' intervals (us)
            if end is None or a > end:
                busy += b - a
                end = b
            elif b > end:
                busy += b - end
                end = b
        self.window = {"images": images, "wall_ms_per_image": round(wall * 1e3 / images, 2), "stages": stages,
                       "gpu_busy_fraction": round(busy / 1e6 / wall, 3) if intervals else None}  # fmt: skip

    def on_predict_end(self, trainer, pl_module) -> None:
        self.prof.stop()
        writer = next((c for c in trainer.callbacks if type(c).__name__ == "ResultWriter"), None)
        writer.drain()
        n = max(1, self.images)
        steady = self.batches[self.skip:]
        steady_images = sum(b[2] for b in steady)
        LAST.clear()
        LAST.update({
            "window": self.window,
            "writer_thread_ms_per_image": {k: round(v * 1e3 / n, 2) for k, v in writer.seconds.items() if k != "samples"},
            "data_wait_ms_per_image": round(self.wait * 1e3 / n, 2),
            "steady_s_per_image": round((steady[-1][1] - steady[0][0]) / steady_images, 4) if steady_images else None,
            "images": self.images,
        })  # fmt: skip


def table(profile: dict) -> str:
    """The profile as rows people read: stage, ms per image on the CPU side and on the GPU."""
    w = profile.get("window") or {}
    lines = [f"{'stage':<34} {'CPU ms/img':>11} {'GPU ms/img':>11}"]
    for name, v in sorted((w.get("stages") or {}).items(), key=lambda kv: -kv[1]["cpu_ms_per_image"]):
        lines.append(f"{name:<34} {v['cpu_ms_per_image']:>11.2f} {v['gpu_ms_per_image']:>11.2f}")
    for name, ms in (profile.get("writer_thread_ms_per_image") or {}).items():
        lines.append(f"{'writer thread: ' + name:<34} {ms:>11.2f} {'':>11}")
    lines.append(f"{'waiting for the DataLoader':<34} {profile.get('data_wait_ms_per_image', 0):>11.2f}")
    lines.append(f"wall {w.get('wall_ms_per_image')} ms/image over {w.get('images')} images of the window; GPU busy "
                 f"{w.get('gpu_busy_fraction')}; steady {profile.get('steady_s_per_image')} s/image")
    return "\n".join(lines)


def profile_predict(args: list[str]) -> dict:
    """`g4seg predict ARGS` in this process with the profile attached; the profile."""
    from g4seg.run.cli import main

    LAST.clear()
    try:
        main(["predict", *args, "--trainer.callbacks+=stage_profile.StageProfile"])
    except SystemExit as e:
        if e.code:
            raise
    return dict(LAST)
