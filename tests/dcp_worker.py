"""One rank of a torch.distributed job on CPU (gloo) that saves or loads a sharded
checkpoint through aoe's DCP storage; run by tests/test_dcp.py, one process per rank.

    python dcp_worker.py save|load|die|fsdp-save|fsdp-load ROOT FONT RANK WORLD PORT [RUN_ID]

The state is the same on every run: a 2-layer model whose weights are DTensors sharded
on dim 0 over all ranks, a replicated tensor, and plain values (a step, a learning rate).
``save`` prints the run id (rank 0); ``load`` loads into a state of this world size,
checks every value against the one saved, and prints "ok"; ``die`` saves, but rank 1
kills itself with SIGKILL while it writes its shards. ``fsdp-save`` trains a small model
sharded with FSDP2 (``fully_shard``) for two AdamW steps and saves model and optimizer
(rank 0 also writes the whole tensors to ``ROOT/../expected-fsdp.pt`` for the check);
``fsdp-load`` loads them into an FSDP2 model of this world size and compares exactly.
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import Shard, distribute_tensor

import aoe
from aoe.dcp import AoeStorageReader, AoeStorageWriter


def full_state(step: int) -> dict[str, torch.Tensor]:
    """The whole state, the same on every rank (seeded)."""
    generator = torch.Generator().manual_seed(step)
    return {
        "embed.weight": torch.randn(64, 32, generator=generator),
        "mlp.weight": torch.randn(48, 32, generator=generator),
        "mlp.bias": torch.randn(48, generator=generator),
        "norm.weight": torch.ones(32) * step,
    }


def state(world: int, step: int) -> dict[str, object]:
    mesh = init_device_mesh("cpu", (world,))
    whole = full_state(step)
    model = {name: distribute_tensor(tensor, mesh, [Shard(0)]) for name, tensor in whole.items() if name != "norm.weight"}
    model["norm.weight"] = whole["norm.weight"]  # replicated: every rank holds it whole
    return {"model": model, "step": step, "optim": {"lr": 0.001 * step, "betas": (0.9, 0.999)}}


def fsdp_model(world: int) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh("cpu", (world,))
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 64), torch.nn.ReLU(), torch.nn.Linear(64, 8))
    for layer in (model[0], model[2]):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model, torch.optim.AdamW(model.parameters(), lr=0.01)


def whole(state: dict[str, object]) -> dict[str, object]:
    return {k: whole(v) if isinstance(v, dict) else v.full_tensor() if hasattr(v, "full_tensor") else v
            for k, v in state.items()}


def fsdp(mode: str, store: aoe.Store, font: str, rank: int, world: int, expected_path: str, run_id: str) -> None:
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model, optimizer = fsdp_model(world)
    if mode == "fsdp-save":
        for step in range(2):
            model(torch.randn(4, 16, generator=torch.Generator().manual_seed(step))).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    model_state, optimizer_state = get_state_dict(model, optimizer)
    state = {"model": model_state, "optim": optimizer_state}
    if mode == "fsdp-save":
        writer = AoeStorageWriter(store, font, tags=["fsdp2"])
        dcp.save(state, storage_writer=writer)
        full = whole(state)
        if rank == 0:
            torch.save(full, expected_path)
            print(writer.run_id, flush=True)
        return
    dcp.load(state, storage_reader=AoeStorageReader(store, font, run_id))
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optim"])
    expected = torch.load(expected_path, weights_only=True)
    got = whole({"model": get_state_dict(model, optimizer)[0]})["model"]
    assert got.keys() == expected["model"].keys()
    assert all(torch.equal(got[k], expected["model"][k]) for k in got), "model differs"
    exp_avg = whole(get_state_dict(model, optimizer)[1])["state"]
    assert all(torch.equal(exp_avg[k]["exp_avg"], expected["optim"]["state"][k]["exp_avg"]) for k in exp_avg)
    if rank == 0:
        print("ok", flush=True)


FINISHED = "rank finished"


def main() -> int:
    mode, root, font, rank, world, port = sys.argv[1:7]
    rank_n, world_n = int(rank), int(world)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=port)
    dist.init_process_group("gloo", rank=rank_n, world_size=world_n, timeout=timedelta(seconds=30))
    store = aoe.Store(root)
    step = int(os.environ.get("STEP", "1"))
    try:
        if mode.startswith("fsdp"):
            fsdp(mode, store, font, rank_n, world_n, os.path.join(os.path.dirname(root), "expected-fsdp.pt"),
                 sys.argv[7] if len(sys.argv) > 7 else "")
        elif mode in ("save", "die"):
            writer = AoeStorageWriter(store, font, params={"step": step}, name=f"step {step}")
            if mode == "die" and rank_n == 1:
                real = writer.write_data

                def write_then_die(plan, planner):
                    real(plan, planner)  # its shards written, the coordinator not told
                    os.kill(os.getpid(), signal.SIGKILL)

                writer.write_data = write_then_die  # type: ignore[method-assign]
            dcp.save(state(world_n, step), storage_writer=writer)
            if rank_n == 0:
                print(writer.run_id, flush=True)
        else:
            target = state(world_n, 0)  # zeros of another step: every value must be overwritten
            dcp.load(target, storage_reader=AoeStorageReader(store, font, sys.argv[7]))
            expected = state(world_n, step)
            for name, tensor in target["model"].items():
                want = expected["model"][name]
                got = tensor.full_tensor() if hasattr(tensor, "full_tensor") else tensor
                want = want.full_tensor() if hasattr(want, "full_tensor") else want
                assert torch.equal(got, want), name
            assert target["step"] == step and target["optim"] == expected["optim"], (target["step"], target["optim"])
            if rank_n == 0:
                print("ok", flush=True)
        dist.barrier()  # no rank tears down gloo while another still talks to it
        print(FINISHED, file=sys.stderr, flush=True)  # its work done, with every rank's (see test_dcp.succeeded)
    finally:
        dist.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
