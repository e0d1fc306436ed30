"""A fuzzer of damaged and hostile stores, run in its own process under a memory limit.

    python fuzz_store.py WORK_DIR --seed N --seconds S [--memory-mb M]

It builds one genuine store (fonts, runs with nested checkpoints, glyphs, feedback, an
amended run, a deleted run), then, round after round until the time is up, copies it,
applies one random mutation of what a buggy or hostile writer could leave (objects,
manifests re-hashed so only their fields are wrong, refs, font claims, trash records, save
markers; and derived data: the catalog index a first listing wrote in the cache, the
fonts' change notes, listing snapshots), and runs every reader on the copy: the Python
API, the commands (in this process), the web pages. It prints one JSON line per problem
found:

- a reader raised something other than a StoreError, or a command failed with more than
  one line, an undocumented exit code, or "internal error" (exit 70);
- anything was written outside the store and the DEST folder `get` was given;
- fsck --read-data did not name the damage it was handed (an object that no longer
  decodes to its address, a manifest that breaks the format, a bad ref, claim or record);
- a listing in a new Store (a fresh cache; for snapshots, a machine that reads the store as
  object storage) shows other runs or other fields than the refs and manifests say, after
  derived data was damaged (except a snapshot that lies with the right tokens, which other
  machines believe by design: then fsck must name it);
- the process itself died (a crash, a hang, memory beyond the limit): the parent sees it.

Everything is derived from the seed, so a failure is replayed with the same seed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import resource
import shutil
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgpack
import torch
import zstandard
from fuzz_derived import HOSTILE_NAMES, Damage, DerivedDamage, agrees_with_refs, files_under, object_files

import aoe
import aoe.catalog
import aoe.catalog.rows
from aoe import cli
from aoe.codec import CODEC_PLANES, CODEC_RAW, CODEC_ZSTD, HEADER, MAGIC, hash_bytes
from aoe.errors import FormatError, StoreError
from aoe.fsck import fsck
from aoe.layout import run_id_at
from aoe.manifests import EXT_STATE_DICT, EXT_TUPLE, unpack
from aoe.web import Browser

DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 5, 6, 10}
WEIRD_VALUES: list[Any] = [
    None, True, -1, 0, 2**63 - 1, 2**64 - 1, -(2**63), 1.5, float("nan"), float("inf"), "", "x" * 5000,
    "../../escape", "/abs/path", "..", ".hidden", "a/b", "C:\\x", "\x1b[2J\x1b]52;c;ZXZpbA==\x07", "\u202eevil",
    b"\x00\xff", [], [1, [2, [3]]], {}, {1: 2}, {"k": b"v"}, {"a": {"b": {"c": {}}}}, "yesterday",
    "0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", msgpack.ExtType(99, b""),
    msgpack.ExtType(EXT_TUPLE, b"\xc1"),
]


def png(level: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), level).save(buffer, format="PNG")
    return buffer.getvalue()


def build_template(root: Path) -> None:
    """A small but complete store: every kind of thing a reader meets."""
    store = aoe.Store(root)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.BatchNorm1d(8), torch.nn.Linear(8, 3))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.randn(5, 4)).sum().backward()
    optimizer.step()
    for name in ("fruity", "dumb"):
        font = store.create_font(name)
        for i in range(3):
            checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": i,
                          "big": torch.arange(70_000, dtype=torch.float32) * i}
            store.save_model(font, checkpoint, torch.randn(4), png(10 * i),
                             {"A": png(i), "b": png(99), "space": png(7)},
                             {"final_loss": 1 / (i + 1), "glyph_loss": {"A": 0.1 * i}, "notes": "ok"},
                             params={"lr": 1e-3 * (i + 1), "sched": {"gamma": 0.5}}, tags=["serif"] if i else [],
                             name=f"run {i}", extras={"ema": {"w": torch.ones(3) * i}})
        runs = store.refs.runs(font)
        store.amend_run(font, runs[0], description="amended", add_tags=["bold"])
        store.delete_run(font, runs[1])
    store.catalog.close()


def run_refs(root: Path) -> list[Path]:
    return [p for p in files_under(root) if p.parent.name == "runs" and run_id_at(p.name)]


def raw_fields(data: bytes) -> dict[str, Any]:
    return msgpack.unpackb(data, ext_hook=msgpack.ExtType, strict_map_key=False, raw=False)


def nested_ext(depth: int) -> msgpack.ExtType:
    data = msgpack.packb(None)
    for level in range(depth):
        data = msgpack.packb(msgpack.ExtType(EXT_TUPLE if level % 2 else EXT_STATE_DICT, data))
    return msgpack.ExtType(EXT_TUPLE, data)


def nested_list(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return value


class Mutator(DerivedDamage):
    def __init__(self, rng: random.Random, bomb: bytes) -> None:
        self.rng = rng
        self.bomb = bomb

    def mutate(self, root: Path) -> Damage:
        kinds: list[Callable[[Path], Damage]] = [
            self.object_bytes, self.object_bytes, self.object_special, self.object_header,
            self.manifest_field, self.manifest_field, self.manifest_field, self.manifest_blob,
            self.manifest_nesting, self.ref, self.claim, self.trash_record, self.marker_or_catalog,
            self.index, self.index, self.change_note, self.snapshot, self.snapshot,
        ]
        return self.rng.choice(kinds)(root)

    def object_bytes(self, root: Path) -> Damage:
        path = self.rng.choice(object_files(root))
        data = bytearray(path.read_bytes())
        how = self.rng.choice(["flip", "truncate", "append", "zero"])
        if how == "flip":
            data[self.rng.randrange(len(data))] ^= 1 << self.rng.randrange(8)
        elif how == "truncate":
            data = data[: self.rng.randrange(len(data))]
        elif how == "append":
            data += os.urandom(self.rng.randint(1, 64))
        else:
            data = bytearray(len(data))
        path.write_bytes(bytes(data))
        return Damage(f"object {path.name}: {how}", path.name)

    def object_special(self, root: Path) -> Damage:
        path = self.rng.choice(object_files(root))
        path.unlink()
        how = self.rng.choice(["symlink to /dev/zero", "fifo", "folder", "symlink to a file"])
        if how == "fifo":
            os.mkfifo(path)
        elif how == "folder":
            path.mkdir()
        elif how == "symlink to a file":
            path.symlink_to(self.rng.choice(object_files(root)))
        else:
            path.symlink_to("/dev/zero")
        return Damage(f"object {path.name}: {how}", path.name)

    def object_header(self, root: Path) -> Damage:
        path = self.rng.choice(object_files(root))
        how = self.rng.choice(["zstd bomb", "huge raw", "huge planes", "planes table", "unknown codec"])
        if how == "zstd bomb":
            data = HEADER.pack(MAGIC, CODEC_ZSTD, 100) + self.bomb
        elif how == "huge raw":
            data = HEADER.pack(MAGIC, CODEC_RAW, 2**40) + b"x"
        elif how == "huge planes":
            data = HEADER.pack(MAGIC, CODEC_PLANES, 2**40) + b"\x04"
        elif how == "planes table":
            data = HEADER.pack(MAGIC, CODEC_PLANES, 4000) + b"\x04" + b"\x00\xff\xff\xff\xff\xff\xff\xff\x7f" * 4
        else:
            data = HEADER.pack(MAGIC, 9, 10) + b"0123456789"
        path.write_bytes(data)
        return Damage(f"object {path.name}: {how}", path.name)

    def _rewrite_manifest(self, root: Path, change: Callable[[dict[str, Any]], str]) -> Damage:
        """Change a run's manifest fields, store it as a valid object, point the ref at it."""
        ref = self.rng.choice(run_refs(root))
        store = aoe.Store(root)
        digest = ref.read_text().strip()
        fields = raw_fields(store.objects.get(digest))
        how = change(fields)
        data = msgpack.packb(fields, use_bin_type=True)
        new = store.objects.put(data)
        ref.write_text(new + "\n")
        where = f"{ref.parent.parent.name}/{ref.name}"
        try:
            unpack(data)
        except FormatError:
            return Damage(f"manifest of {where}: {how}", where)
        return Damage(f"manifest of {where}: {how} (still valid)", None)

    def manifest_field(self, root: Path) -> Damage:
        def change(fields: dict[str, Any]) -> str:
            key = self.rng.choice(sorted(fields) + ["glyphs", "extras", "tags", "params", "metrics"])
            if self.rng.random() < 0.2 and key in fields:
                del fields[key]
                return f"{key} removed"
            if key == "glyphs" and fields.get("glyphs"):
                blob = next(iter(fields["glyphs"].values()))
                fields["glyphs"][self.rng.choice(HOSTILE_NAMES)] = blob
                return "a hostile glyph name"
            if key == "extras" and self.rng.random() < 0.5:
                fields["extras"] = {self.rng.choice(HOSTILE_NAMES): {}}
                return "a hostile extra name"
            value = self.rng.choice(WEIRD_VALUES)
            fields[key] = value
            return f"{key} = {value!r:.60}"

        return self._rewrite_manifest(root, change)

    def manifest_blob(self, root: Path) -> Damage:
        def change(fields: dict[str, Any]) -> str:
            target = self.rng.choice([k for k in ("sample", "feedback") if k in fields] or ["sample"])
            blob = dict(fields.get(target) or {"size": 1, "chunks": []})
            how = self.rng.choice(["size 2**40", "no chunks", "size -1", "bad digest", "many chunks"])
            if how == "size 2**40":
                blob["size"] = 2**40
            elif how == "no chunks":
                blob["chunks"] = []
            elif how == "size -1":
                blob["size"] = -1
            elif how == "bad digest":
                blob["chunks"] = ["../../" + "0" * 58]
            else:
                blob["chunks"] = list(blob.get("chunks", [])) * 2000
            fields[target] = blob
            return f"{target} blob: {how}"

        return self._rewrite_manifest(root, change)

    def manifest_nesting(self, root: Path) -> Damage:
        def change(fields: dict[str, Any]) -> str:
            how = self.rng.choice(["ext 3000 deep", "lists 500 deep", "params 500 deep"])
            if how == "ext 3000 deep":
                fields["weights"] = nested_ext(3000)
            elif how == "lists 500 deep":
                fields["weights"] = nested_list(500)
            else:
                fields["params"] = {"deep": nested_list(500)}
            return how

        return self._rewrite_manifest(root, change)

    def ref(self, root: Path) -> Damage:
        ref = self.rng.choice(run_refs(root))
        how = self.rng.choice(["garbage", "missing manifest", "empty", "symlink", "folder"])
        ref.unlink()
        if how == "garbage":
            ref.write_bytes(os.urandom(40))
        elif how == "missing manifest":
            ref.write_text(hash_bytes(b"nothing") + "\n")
        elif how == "empty":
            ref.write_bytes(b"")
        elif how == "symlink":
            ref.symlink_to("/dev/zero")
        else:
            ref.mkdir()
        where = f"{ref.parent.parent.name}/runs/{ref.name}"
        return Damage(f"ref {where}: {how}", None if how == "folder" else where)

    def claim(self, root: Path) -> Damage:
        path = self.rng.choice(files_under(root / ".fonts"))
        content = self.rng.choice([b"", b"\xff\xfe", b"9-other\n", b"1-\x1b[2J\n", os.urandom(30)])
        path.write_bytes(content)
        return Damage(f"claim {path.name} = {content!r}", f".fonts/{path.name}")

    def trash_record(self, root: Path) -> Damage:
        path = self.rng.choice(files_under(root / ".trash"))
        content = self.rng.choice([b"{", b"[]", b"[" * 5000 + b"]" * 5000, b'{"font_id": 7}', os.urandom(20)])
        path.write_bytes(content)
        return Damage(f"trash record {path.name}: {content[:20]!r}", ".trash")

    def marker_or_catalog(self, root: Path) -> Damage:
        if self.rng.random() < 0.5:
            marker = root / ".inflight" / "0123456789abcdef"
            marker.parent.mkdir(exist_ok=True)
            marker.write_bytes(self.rng.choice([b"{", b"[" * 5000, b'{"pid": "x", "host": 5}', os.urandom(20)]))
            return Damage("a garbage save marker", None)
        index = root / ".catalog" / "index.sqlite"
        index.parent.mkdir(exist_ok=True)
        for leftover in index.parent.iterdir():
            leftover.unlink()
        if self.rng.random() < 0.5:
            index.write_bytes(os.urandom(4096))
            return Damage("a garbage catalog index", None)
        index.symlink_to("/etc/hostname")
        return Damage("the catalog index is a symlink", None)


@contextlib.contextmanager
def captured() -> Iterator[io.StringIO]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        yield err


def run_command(*args: str) -> tuple[int, str]:
    old = sys.argv
    sys.argv = ["aoe", "store", *args]
    with captured() as err:
        try:
            cli.main()
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        finally:
            sys.argv = old
    return code, err.getvalue()


def read_everything(root: Path, dest: Path, problems: list[str]) -> None:
    """Every reader a user runs, each expected to answer or fail with a StoreError."""

    def api(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except StoreError:
            return None
        except Exception as exc:
            problems.append(f"API {what}: {type(exc).__name__}: {exc}\n{traceback.format_exc(limit=-3)}")
            return None

    store = aoe.Store(root)
    fonts = api("list_fonts", store.list_fonts) or []
    runs: list[tuple[str, str]] = []
    for font in fonts:
        for info in api(f"list_runs {font}", lambda: store.list_runs(font, sort="-metrics.final_loss")) or []:
            runs.append((font, info.run_id))
        api("count", lambda: store.count_runs(font, where=["metrics.final_loss<0.7"]))
    api("search", lambda: store.search("run", sort="params.lr"))
    api("font_summaries", store.font_summaries)
    api("disk_usage", store.disk_usage)
    api("trashed", store.trashed)
    for font, run_id in runs:
        api("load_model", lambda: store.load_model(font, run_id))
        api("load_glyphs", lambda: store.load_glyphs(font, run_id))
        api("load_feedback", lambda: store.load_feedback(font, run_id, with_defaults=True))
        api("load_extra", lambda: store.load_extra(font, run_id, "ema"))
        api("run_history", lambda: store.run_history(font, run_id))
        api("open_weights", lambda: [w for w in store.open_weights(font, run_id)])
    commands = [["ls"], ["trash"], ["du"], ["fsck", "--json"], ["gc", "--dry-run"], ["search", "run"]]
    for font in fonts:
        commands += [["ls", font], ["ls", font, "--json", "--sort", "metrics.final_loss"]]
    for number, (font, run_id) in enumerate(runs[:4]):
        commands += [["show", font, run_id], ["log", font, run_id], ["get", font, run_id, str(dest / str(number))]]
    if len(runs) >= 2 and runs[0][0] == runs[1][0]:
        commands.append(["diff", runs[0][0], runs[0][1], runs[1][1]])
    for args in commands:
        code, err = run_command("--root", str(root), *args)
        lines = err.strip().splitlines()
        one_line = len(lines) == 1 and lines[0].startswith("aoe: error: ")
        if code not in DOCUMENTED_EXITS or (code not in (0, 10) and not one_line) or "Traceback" in err:
            problems.append(f"command {' '.join(args)}: exit {code}: {err.strip()[-600:]}")
    browser = Browser(aoe.Store(root))
    pages = ["/", "/search?q=run"] + [f"/font/{f}" for f in fonts] + [f"/run/{f}/{r}" for f, r in runs]
    pages += [f"/download/{f}/{r}.zip" for f, r in runs[:2]]
    if len(runs) >= 2 and runs[0][0] == runs[1][0]:
        pages.append(f"/compare/{runs[0][0]}?a={runs[0][1]}&b={runs[1][1]}")
    for page in pages:
        try:
            status, _, body = browser.respond(page)
            if not isinstance(body, bytes):
                body = b"".join(body)
        except StoreError:
            continue  # a blob that fails mid-stream: the server cuts the response short
        except Exception as exc:
            problems.append(f"page {page}: {type(exc).__name__}: {exc}")
            continue
        if b"internal error" in body:
            problems.append(f"page {page}: {status}: {body[-300:]!r}")


def check_named(root: Path, damage: Damage, problems: list[str]) -> None:
    if damage.must_name is None:
        return
    try:
        report = fsck(aoe.Store(root), read_data=True)
    except StoreError as exc:
        if damage.must_name.startswith((".fonts", ".trash")):
            return  # a claim or record that cannot be read stops fsck with a one-line error naming it
        problems.append(f"fsck failed ({exc}) on {damage.what}")
        return
    text = json.dumps(report.to_dict())
    if damage.must_name not in text:
        problems.append(f"fsck --read-data did not name {damage.must_name} after {damage.what}")


def outside_files(sandbox: Path, allowed: list[Path]) -> set[str]:
    return {str(p) for p in sandbox.rglob("*") if not any(a == p or a in p.parents for a in allowed)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("work", type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--memory-mb", type=int, default=1024)
    args = parser.parse_args()
    template = args.work / "template"
    build_template(template)
    stream = zstandard.ZstdCompressor(level=3).compressobj(size=2**30)  # a frame that says "1 GiB"
    zeros = bytes(2**26)
    bomb = b"".join(stream.compress(zeros) for _ in range(16)) + stream.flush()
    os.environ["AOE_CACHE_DIR"] = str(args.work / "cache")
    aoe.catalog.LISTING_MIN = 1  # the template's fonts are small: every first listing shares a snapshot
    aoe.catalog.rows.SETTLED_NS = -1  # and every font is settled: packed copies are written at once
    used = int(open("/proc/self/status").read().split("VmSize:")[1].split()[0]) * 1024
    limit = used + args.memory_mb * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    rng = random.Random(args.seed)
    mutator = Mutator(rng, bomb)
    deadline = time.monotonic() + args.seconds
    rounds = found = 0
    while time.monotonic() < deadline:
        rounds += 1
        sandbox = args.work / f"round-{rounds}"
        root, dest = sandbox / "networks", sandbox / "dest"
        shutil.copytree(template, root, symlinks=True)
        dest.mkdir()
        damage = mutator.mutate(root)
        print(json.dumps({"round": rounds, "damage": damage.what}), flush=True)
        before = outside_files(sandbox, [root, dest])
        problems: list[str] = []
        read_everything(root, dest, problems)
        if before != outside_files(sandbox, [root, dest]):
            problems.append(f"files written outside the store and DEST: {outside_files(sandbox, [root, dest]) - before}")
        agrees_with_refs(root, damage, problems)
        check_named(root, damage, problems)
        for problem in problems:
            found += 1
            print(json.dumps({"round": rounds, "damage": damage.what, "problem": problem}), flush=True)
        shutil.rmtree(sandbox, ignore_errors=True)
    print(json.dumps({"rounds": rounds, "problems": found, "seed": args.seed,
                      "rate": round(rounds / max(args.seconds, 1e-9), 2)}), flush=True)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
