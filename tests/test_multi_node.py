"""Two "nodes" of one process each over loopback (gloo), started as a cluster starts them:
with Lightning's own variables (MASTER_ADDR, NODE_RANK, ...) and with SLURM's (what `srun`
sets). The numbers equal a one-process run; a failure on node 1 is named with its process
and node, and node 0 does not point at an error printed on another machine."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys

import pytest

from helpers import DEMO, ROOT, finished_run, read_metrics

RUN = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "6", "--scoring.bootstrap", "500",
       "--trainer.accelerator", "cpu", "--trainer.strategy", "ddp", "--trainer.devices", "1", "--trainer.num_nodes", "2"]  # fmt: skip
ONE = ["predict", "--config", "configs/densecrf.yaml", "--data.init_args.limit", "6", "--scoring.bootstrap", "500"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def lightning_env(node: int, port: int) -> dict[str, str]:
    return {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "NODE_RANK": str(node), "WORLD_SIZE": "2"}


def slurm_env(node: int, port: int) -> dict[str, str]:
    """What `srun --nodes 2 --ntasks-per-node 1` gives each task (the node list resolves to this machine)."""
    return {"SLURM_NTASKS": "2", "SLURM_NTASKS_PER_NODE": "1", "SLURM_NNODES": "2", "SLURM_JOB_NUM_NODES": "2",
            "SLURM_PROCID": str(node), "SLURM_LOCALID": "0", "SLURM_NODEID": str(node), "SLURM_JOB_ID": "4242",
            "SLURM_JOB_NAME": "g4seg", "SLURM_NODELIST": "127.0.0.1", "MASTER_PORT": str(port)}  # fmt: skip


def run_nodes(args: list[str], env_of) -> list[subprocess.CompletedProcess]:
    port = free_port()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "MASTER_", "NODE_RANK", "LOCAL_RANK"))}
    procs = [subprocess.Popen([sys.executable, "-m", "g4seg.cli", *args], cwd=ROOT, text=True,
                              env={**base, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **env_of(node, port)},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for node in (0, 1)]  # fmt: skip
    done = []
    for proc in procs:
        try:
            out, err = proc.communicate(timeout=400)
        except subprocess.TimeoutExpired:
            for p in procs:
                p.kill()
            raise
        done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, err))
    return done


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    return finished_run(tmp_path_factory.mktemp("one"), *ONE)


@pytest.mark.parametrize("env_of", [lightning_env, slurm_env], ids=["lightning-env", "slurm-env"])
def test_two_nodes_equal_one_process(tmp_path, one_process, env_of):
    out = tmp_path / "run"  # a shared file system, as on a cluster
    nodes = run_nodes([*RUN, "--output_dir", str(out)], env_of)
    for node, proc in enumerate(nodes):
        assert proc.returncode == 0, f"node {node}:\n{proc.stderr[-4000:]}"
    assert read_metrics(out) == read_metrics(one_process)
    assert len(list((out / "records").glob("*.json"))) == 6


def test_a_failure_on_node_1_is_named_with_process_and_node(tmp_path):
    root = tmp_path / "voc"
    shutil.copytree(DEMO, root)
    ids = sorted(p.stem for p in (root / "SegmentationClass").glob("*.png"))[:6]
    (root / "JPEGImages" / f"{ids[1]}.jpg").write_bytes(b"not an image")  # index 1: rank 1's first sample
    node0, node1 = run_nodes([*RUN, "--data.init_args.root", str(root), "--output_dir", str(tmp_path / "o")], lightning_env)
    lines1 = [line for line in node1.stderr.splitlines() if line.startswith("g4seg")]
    assert node1.returncode == 2 and "Traceback" not in node1.stderr, node1.stderr[-3000:]
    assert lines1 == [f"g4seg: error (process 1, node 1): {root}/JPEGImages/{ids[1]}.jpg: cannot read image "
                      f"(cannot identify image file '{root}/JPEGImages/{ids[1]}.jpg')"], node1.stderr[-3000:]  # fmt: skip
    lines0 = [line for line in node0.stderr.splitlines() if line.startswith("g4seg")]
    assert node0.returncode == 2 and "Traceback" not in node0.stderr, node0.stderr[-3000:]
    assert lines0[-1] == ("g4seg: process 0, node 0 stopped because another process of this run ended; if that one "
                          "failed, its 'g4seg: error (process N...)' line is on its node's terminal, otherwise it was "
                          "killed"), node0.stderr[-3000:]  # fmt: skip
