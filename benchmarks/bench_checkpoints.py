"""Save and load the checkpoints trainers write: aoe against torch.save, safetensors and the disk.

    python benchmarks/bench_checkpoints.py [--repeats 5] [--only NAME ...] [--json results.json]

Real architectures built from their configs (random init, then a few optimizer steps),
saved the way trainers save them: a model's state_dict, or a whole training checkpoint
(model, AdamW state, scheduler, grad scaler, RNG state). Every figure is the median of
--repeats tries, the contenders taking turns in this one process; each save writes new
files (a new .pt, a new store) and deletes them afterwards, so each meets the same disk.

- torch.save + fsync of one file: what a trainer writes otherwise;
- safetensors save_file + fsync (flat state_dicts only: it cannot hold a checkpoint);
- the disk: the tensors' raw bytes written to one file + fsync (no format at all);
- aoe save_model, into a store created beforehand: new weights, and the same weights
  again (nothing new to write);
- loads: torch.load(weights_only=True), safetensors (reading every byte), aoe load_model
  (every byte hash-verified).

Needs ``pip install -e .[bench]`` (transformers, safetensors, matplotlib).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
from bench_background import tensors_of
from bench_save_load import remove, take_turns, torch_save_fsync

import aoe
from aoe.weights import raw_view

# -- the workloads --------------------------------------------------------------------


def trained(model: torch.nn.Module, batch: Callable[[], dict[str, torch.Tensor] | torch.Tensor],
            steps: int = 2) -> tuple[torch.nn.Module, torch.optim.Optimizer, Any]:
    """``model`` after a few AdamW steps on random input (weights and optimizer state real)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 200])
    model.train()
    for _ in range(steps):
        inputs = batch()
        output = model(**inputs) if isinstance(inputs, dict) else model(inputs)
        loss = output.loss if hasattr(output, "loss") and output.loss is not None else (
            output.logits if hasattr(output, "logits") else output).float().pow(2).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return model, optimizer, scheduler


def checkpoint(model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any) -> dict[str, Any]:
    """A whole training checkpoint, as trainers write it to resume."""
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "epoch": 3, "step": 1200}


def gpt2(layers: int, width: int, heads: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=layers, n_embd=width, n_head=heads))  # ties wte and lm_head


def tokens(vocab: int = 50257) -> Callable[[], dict[str, torch.Tensor]]:
    return lambda: {"input_ids": (ids := torch.randint(0, vocab, (2, 32))), "labels": ids}


def bert_small() -> tuple[torch.nn.Module, Callable[[], dict[str, torch.Tensor]]]:
    from transformers import BertConfig, BertForMaskedLM

    config = BertConfig(hidden_size=512, num_hidden_layers=4, num_attention_heads=8, intermediate_size=2048)
    return BertForMaskedLM(config), tokens(config.vocab_size)


def t5_small() -> tuple[torch.nn.Module, Callable[[], dict[str, torch.Tensor]]]:
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(d_model=512, d_ff=2048, num_layers=6, num_heads=8, vocab_size=32128,  # t5-small's shape
                      decoder_start_token_id=0, pad_token_id=0)

    def batch() -> dict[str, torch.Tensor]:
        ids = torch.randint(0, config.vocab_size, (2, 32))
        return {"input_ids": ids, "labels": ids}

    return T5ForConditionalGeneration(config), batch


class Bottleneck(torch.nn.Module):
    """ResNet's bottleneck block, from its layer shapes."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        out = width * 4
        self.conv1, self.bn1 = torch.nn.Conv2d(inputs, width, 1, bias=False), torch.nn.BatchNorm2d(width)
        self.conv2 = torch.nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = torch.nn.BatchNorm2d(width)
        self.conv3, self.bn3 = torch.nn.Conv2d(width, out, 1, bias=False), torch.nn.BatchNorm2d(out)
        self.downsample = torch.nn.Sequential(torch.nn.Conv2d(inputs, out, 1, stride, bias=False),
                                              torch.nn.BatchNorm2d(out)) if stride != 1 or inputs != out else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn1(self.conv1(x)).relu()
        y = self.bn2(self.conv2(y)).relu()
        y = self.bn3(self.conv3(y))
        return (y + (self.downsample(x) if self.downsample is not None else x)).relu()


class Basic(torch.nn.Module):
    """ResNet-18's basic block."""

    def __init__(self, inputs: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = torch.nn.Conv2d(inputs, width, 3, stride, 1, bias=False)
        self.bn1 = torch.nn.BatchNorm2d(width)
        self.conv2, self.bn2 = torch.nn.Conv2d(width, width, 3, 1, 1, bias=False), torch.nn.BatchNorm2d(width)
        self.downsample = torch.nn.Sequential(torch.nn.Conv2d(inputs, width, 1, stride, bias=False),
                                              torch.nn.BatchNorm2d(width)) if stride != 1 or inputs != width else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn2(self.conv2(self.bn1(self.conv1(x)).relu()))
        return (y + (self.downsample(x) if self.downsample is not None else x)).relu()


def resnet(block: type[torch.nn.Module], depths: tuple[int, ...], expansion: int) -> torch.nn.Module:
    """torchvision's ResNet layout (the same state_dict keys and shapes), from layer shapes."""
    layers: list[torch.nn.Module] = [torch.nn.Conv2d(3, 64, 7, 2, 3, bias=False), torch.nn.BatchNorm2d(64),
                                     torch.nn.ReLU(), torch.nn.MaxPool2d(3, 2, 1)]
    inputs = 64
    for stage, depth in enumerate(depths):
        width = 64 * 2**stage
        blocks = []
        for index in range(depth):
            blocks.append(block(inputs, width, 2 if index == 0 and stage > 0 else 1))
            inputs = width * expansion
        layers.append(torch.nn.Sequential(*blocks))
    return torch.nn.Sequential(*layers, torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                               torch.nn.Linear(inputs, 1000))


def images() -> torch.Tensor:
    return torch.randn(2, 3, 64, 64)


def tiny_tensors() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {f"t{i}": torch.randn(16) for i in range(5000)}


def large_tensors() -> dict[str, torch.Tensor]:
    from bench_save_load import trained_state_dict

    return trained_state_dict()


def workloads() -> dict[str, Callable[[], dict[str, Any]]]:
    """Name -> a function building the state to save (built one at a time: they are large)."""
    def state_dict(build: Callable[[], tuple[torch.nn.Module, Callable[[], Any]]]) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            torch.manual_seed(0)
            model, batch = build()
            return trained(model, batch)[0].state_dict()
        return make

    def whole(build: Callable[[], tuple[torch.nn.Module, Callable[[], Any]]]) -> Callable[[], dict[str, Any]]:
        def make() -> dict[str, Any]:
            torch.manual_seed(0)
            model, batch = build()
            return checkpoint(*trained(model, batch))
        return make

    return {
        "GPT-2 6x384 state_dict": state_dict(lambda: (gpt2(6, 384, 6), tokens())),
        "BERT small (4x512) state_dict": state_dict(bert_small),
        "T5 small state_dict": state_dict(t5_small),
        "ResNet-18 state_dict": state_dict(lambda: (resnet(Basic, (2, 2, 2, 2), 1), images)),
        "ResNet-50 state_dict": state_dict(lambda: (resnet(Bottleneck, (3, 4, 6, 3), 4), images)),
        "ResNet-50 checkpoint": whole(lambda: (resnet(Bottleneck, (3, 4, 6, 3), 4), images)),
        "GPT-2 small checkpoint": whole(lambda: (gpt2(12, 768, 12), tokens())),
        "5,000 tensors of 16 floats": tiny_tensors,
        "16 tensors of 2048x2048": large_tensors,
    }


# -- measuring --------------------------------------------------------------------------


def distinct(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """One tensor per storage (tied weights once)."""
    return list({(t.untyped_storage().data_ptr(), t.storage_offset()): t for t in tensors}.values())


def raw_write_fsync(tensors: list[torch.Tensor], path: Path) -> None:
    with open(path, "wb") as file:
        for tensor in tensors:
            file.write(raw_view(tensor.contiguous()))
        file.flush()
        os.fsync(file.fileno())


def safetensors_save_fsync(state: dict[str, torch.Tensor], path: Path) -> None:
    safetensors.torch.save_file(state, path)
    with open(path, "rb") as file:
        os.fsync(file.fileno())


def flat(state: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The state as safetensors takes it (tied tensors once), or None if it cannot."""
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        return None
    seen: dict[tuple[int, int], str] = {}
    out = {}
    for key, tensor in state.items():
        where = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if where not in seen:
            seen[where] = key
            out[key] = tensor.contiguous()
    return out


def aoe_modes() -> dict[str, bool | None]:
    """aoe as a user gets it, and with its float setting the other way (see FLOAT_PLANES_MIN_CORES)."""
    default = aoe.Store("memory://probe").objects.compress_floats
    return {"aoe": None, f"aoe, float planes {'off' if default else 'on'}": not default}


def measure(name: str, state: dict[str, Any], work: Path, repeats: int) -> dict[str, Any]:
    tensors = distinct(tensors_of(state))
    size = sum(t.numel() * t.element_size() for t in tensors)
    plain = flat(state)
    modes = aoe_modes()
    savers: dict[str, Callable[[int], object]] = {
        "torch.save": lambda n: torch_save_fsync(state, work / f"t{n}.pt"),
        "disk": lambda n: raw_write_fsync(tensors, work / f"r{n}.bin"),
    }
    for index, (mode, floats) in enumerate(modes.items()):
        savers[mode] = lambda n, index=index, floats=floats: aoe.Store(
            work / f"s{n}-{index}", compress_floats=floats).save_model("1-bench", state)
    if plain is not None:
        savers["safetensors"] = lambda n: safetensors_save_fsync(plain, work / f"f{n}.safetensors")

    def prepare(contender: str, attempt: int) -> None:
        if contender in modes:
            aoe.Store(work / f"s{attempt}-{list(modes).index(contender)}").create_font("bench")

    def tidy(contender: str, attempt: int) -> None:
        for path in work.glob(f"[strf]{attempt}[.-]*"):
            remove(path)

    saved = take_turns(savers, repeats, before=prepare, after=tidy)
    stores, runs = {}, {}
    for index, (mode, floats) in enumerate(modes.items()):
        stores[mode] = aoe.Store(work / f"store-{index}", compress_floats=floats)
        stores[mode].create_font("bench")
        runs[mode] = stores[mode].save_model("1-bench", state)
    stored = {mode: sum(f.stat().st_size for f in (work / f"store-{i}" / ".objects").rglob("*") if f.is_file())
              for i, mode in enumerate(modes)}
    unchanged = take_turns({"aoe": lambda n: stores["aoe"].save_model("1-bench", state)}, repeats)["aoe"]
    torch_save_fsync(state, work / "w.pt")
    loaders: dict[str, Callable[[int], object]] = {
        "torch.load": lambda n: torch.load(work / "w.pt", weights_only=True, map_location="cpu"),
        **{mode: (lambda n, mode=mode: stores[mode].load_model("1-bench", runs[mode])) for mode in modes},
    }
    if plain is not None:
        safetensors.torch.save_file(plain, work / "w.safetensors")
        loaders["safetensors"] = lambda n: safetensors.torch.load((work / "w.safetensors").read_bytes())
    loaded = take_turns(loaders, repeats)
    for mode in modes:
        back = stores[mode].load_model("1-bench", runs[mode]).weights
        assert all(torch.equal(a, b) for a, b in zip(tensors_of(back), tensors_of(state))), "not exact"
    for index in range(len(modes)):
        shutil.rmtree(work / f"store-{index}")
    for path in work.glob("w.*"):
        path.unlink()
    return {"name": name, "tensors": len(tensors_of(state)), "distinct": len(tensors), "bytes": size,
            "save": saved, "save_unchanged": unchanged, "load": loaded, "stored": stored}


def report(result: dict[str, Any]) -> None:
    save, load = result["save"], result["load"]
    base_save, base_load = save["torch.save"], load["torch.load"]
    print(f"\n{result['name']}: {result['tensors']} tensors ({result['distinct']} distinct), "
          f"{result['bytes'] / 1e6:.1f} MB")
    for contender, seconds in save.items():
        print(f"  save {contender:26} {seconds * 1000:8.1f} ms  {seconds / base_save:5.2f}x torch.save")
    print(f"  save {'aoe, unchanged weights':26} {result['save_unchanged'] * 1000:8.1f} ms  "
          f"{result['save_unchanged'] / base_save:5.2f}x torch.save")
    for contender, seconds in load.items():
        print(f"  load {contender:26} {seconds * 1000:8.1f} ms  {seconds / base_load:5.2f}x torch.load")
    for mode, stored in result["stored"].items():
        print(f"  stored by {mode:21} {stored / 1e6:8.1f} MB  {stored / result['bytes']:5.2f}x the tensors")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="*", help="workloads whose names contain one of these")
    parser.add_argument("--json", help="write the figures here (for plot_checkpoints.py)")
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}, aoe {aoe.__version__}; median of {args.repeats}, in turns; "
          f"float planes by default here: {aoe.Store('memory://probe').objects.compress_floats}")
    results = []
    for name, build in workloads().items():
        if args.only and not any(part.lower() in name.lower() for part in args.only):
            continue
        work = Path(tempfile.mkdtemp(prefix="aoe-bench-checkpoints-", dir=args.dir))
        try:
            results.append(measure(name, build(), work, args.repeats))
            report(results[-1])
        finally:
            shutil.rmtree(work, ignore_errors=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
