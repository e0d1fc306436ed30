"""Sharded checkpoints of a fine-tune through torch.distributed.checkpoint: aoe's storage
against DCP's own FileSystemWriter, the same state, the same ranks.

    python benchmarks/bench_dcp.py [--ranks 2] [--checkpoints 5] [--steps 3]

A transformers GPT-2 (6 layers, 384 wide, tied embeddings) built from its config, its
weights and AdamW state sharded on dim 0 over --ranks gloo processes on CPU (DTensor,
``Shard(0)``), as FSDP2 holds them. It is fine-tuned as people fine-tune: embeddings and
the first half of the blocks frozen, the rest trained; after every --steps steps each
rank saves the whole sharded state twice, once through FileSystemWriter (a new folder
each time, fsynced, as DCP users write) and once through AoeStorageWriter (a new run of
one store), in turns. Printed: the median time of a save on rank 0 for each, and the bytes
each left on disk after all checkpoints.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
import torch.multiprocessing as mp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import aoe
from aoe.dcp import AoeStorageWriter


def model_and_optimizer() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=384, n_head=6, vocab_size=8192, n_positions=256))
    for name, parameter in model.named_parameters():
        frozen = name.startswith(("transformer.wte", "transformer.wpe")) or \
            any(name.startswith(f"transformer.h.{layer}.") for layer in range(3))
        parameter.requires_grad_(not frozen)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    return model, optimizer


def sharded(state: dict[str, Any], mesh: Any) -> dict[str, Any]:
    """Every tensor of at least one row sharded on dim 0 (as FSDP2 shards); scalars kept."""
    def shard(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] >= mesh.size():
            return distribute_tensor(value.detach(), mesh, [Shard(0)])
        if isinstance(value, dict):
            return {k: shard(v) for k, v in value.items()}
        if isinstance(value, list):
            return [shard(v) for v in value]
        return value
    return {k: shard(v) for k, v in state.items()}


def rank_main(rank: int, world: int, port: str, work: str, checkpoints: int, steps: int, queue: Any) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    mesh = init_device_mesh("cpu", (world,))
    model, optimizer = model_and_optimizer()
    store = aoe.Store(Path(work) / "networks")
    if rank == 0:
        store.create_font("gpt")
    dist.barrier()
    generator = torch.Generator().manual_seed(1)
    times: dict[str, list[float]] = {"FileSystemWriter": [], "AoeStorageWriter": []}
    for checkpoint in range(checkpoints):
        for _ in range(steps):
            tokens = torch.randint(0, 8192, (4, 64), generator=generator)
            model(tokens, labels=tokens).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
        state = sharded({"model": model.state_dict(), "optim": optimizer.state_dict(), "step": checkpoint}, mesh)
        order = ["FileSystemWriter", "AoeStorageWriter"]
        for name in order if checkpoint % 2 == 0 else order[::-1]:  # take turns at going first
            writer = dcp.FileSystemWriter(Path(work) / "dcp" / f"checkpoint-{checkpoint}") \
                if name == "FileSystemWriter" else AoeStorageWriter(store, "1-gpt", params={"checkpoint": checkpoint})
            dist.barrier()
            began = time.perf_counter()
            dcp.save(state, storage_writer=writer)
            times[name].append(time.perf_counter() - began)
    if rank == 0:
        queue.put(times)
    dist.destroy_process_group()


def folder_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--checkpoints", type=int, default=5)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-dcp-", dir=args.dir))
    try:
        with socket_port() as port:
            context = mp.get_context("spawn")
            queue = context.Queue()
            mp.start_processes(rank_main, args=(args.ranks, port, str(work), args.checkpoints, args.steps, queue),
                               nprocs=args.ranks, start_method="spawn")
            times = queue.get()
        model, _ = model_and_optimizer()
        tensor_bytes = sum(t.numel() * t.element_size() for t in model.state_dict().values())
        print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, aoe {aoe.__version__}; "
              f"GPT-2 6x384, {tensor_bytes / 1e6:.0f} MB of weights (+ AdamW state of the trained half), "
              f"{args.ranks} ranks (gloo, CPU), {args.checkpoints} checkpoints, {args.steps} steps apart")
        dcp_bytes, aoe_bytes = folder_bytes(work / "dcp"), folder_bytes(work / "networks" / ".objects")
        fs, ours = statistics.median(times["FileSystemWriter"]), statistics.median(times["AoeStorageWriter"])
        print(f"| writer | save (median, rank 0) | stored after {args.checkpoints} checkpoints |")
        print("|---|---|---|")
        print(f"| FileSystemWriter | {fs * 1000:.0f} ms | {dcp_bytes / 1e6:.0f} MB |")
        print(f"| AoeStorageWriter | {ours * 1000:.0f} ms ({ours / fs:.2f}x) | {aoe_bytes / 1e6:.0f} MB "
              f"({aoe_bytes / dcp_bytes:.2f}x) |")
        print("all save times (s):", {k: [round(t, 3) for t in v] for k, v in times.items()})
    finally:
        shutil.rmtree(work, ignore_errors=True)


class socket_port:
    """A free TCP port on loopback for the process group's rendezvous."""

    def __enter__(self) -> str:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return str(sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        pass


if __name__ == "__main__":
    sys.exit(main())
