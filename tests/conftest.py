"""Shared fixtures: a fresh store, real PNG images, and a small trained model."""

from __future__ import annotations

import io
import os
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from PIL import Image

import aoe

# Float byte planes on, whatever the machine's cores (the default follows them): the suite
# checks the same stored forms everywhere, and the planes path is the fuller one.
# tests/test_objects.py checks the other setting and the default.
os.environ.setdefault("AOE_COMPRESS_FLOATS", "1")
from aoe import cli


def make_png(color: int = 0, size: int = 8) -> bytes:
    """A real PNG image of one grey level."""
    buffer = io.BytesIO()
    Image.new("L", (size, size), color).save(buffer, format="PNG")
    return buffer.getvalue()


class TinyFont(torch.nn.Module):
    """A stand-in for a personality font model: vector in, glyph image out."""

    def __init__(self) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Linear(16, 64))
        self.norm = torch.nn.BatchNorm1d(64)

    def forward(self, vector: torch.Tensor) -> torch.Tensor:
        return self.norm(self.body(vector))


SLOW_MODULES = {"test_concurrency", "test_damage", "test_faults", "test_fuzz", "test_example", "test_browser"}
"""Modules of real processes, servers or long loops: all their tests are marked ``slow``."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Markers, so ``pytest -m "not slow"`` runs the fast tests alone: ``s3`` for every
    test on the SeaweedFS server, ``browser`` for Chromium, ``slow`` for those and for
    tests that run processes (the ``aoe`` command, writers, servers)."""
    for item in items:
        module = item.module.__name__ if item.module else ""
        fixtures = getattr(item, "fixturenames", ())
        if "seaweed" in fixtures or "[s3]" in item.name:
            item.add_marker(pytest.mark.s3)
            item.add_marker(pytest.mark.slow)
        if module == "test_browser":
            item.add_marker(pytest.mark.browser)
        if module in SLOW_MODULES or _starts_processes(item):
            item.add_marker(pytest.mark.slow)


PROCESS_CALLS = ("subprocess.", "aoe_cli(", "start_writer(", "run_limited(", "Popen(", "SeaweedServer.start(")


def _starts_processes(item: pytest.Item) -> bool:
    """Whether a test's own code starts a process (read from its source: no list to keep)."""
    import inspect

    function = getattr(item, "function", None)
    try:
        source = inspect.getsource(function) if function else ""
    except OSError:
        return False
    if any(call in source for call in PROCESS_CALLS):
        item.add_marker(pytest.mark.processes)
        return True
    return False


@pytest.fixture
def store(tmp_path: Path) -> aoe.Store:
    return aoe.Store(tmp_path / "networks")


@pytest.fixture
def font(store: aoe.Store) -> str:
    return store.create_font("fruity")


@pytest.fixture
def runs(store: aoe.Store, font: str) -> list[str]:
    """Six runs with params, feedback metrics, tags, names and times to query."""
    specs = [
        ("serif light", "thin strokes", ["serif"], 0.001, 0.30, "completed"),
        ("serif bold", "heavy Serif strokes", ["serif", "bold"], 0.01, 0.10, "completed"),
        ("sans", "clean", ["sans"], 0.001, 0.20, "completed"),
        ("sans bold", None, ["sans", "bold"], 0.1, 0.50, "failed"),
        (None, "100% effort_", [], 0.01, 0.05, "completed"),
        ("no feedback", None, ["serif"], None, None, "completed"),
    ]
    ids = []
    for day, (name, description, tags, lr, loss, status) in enumerate(specs, start=1):
        feedback = None if loss is None else {"final_loss": loss, "glyph_loss": {"A": loss * 2}, "ok": True}
        ids.append(store.save_model(
            font, {"w": torch.ones(2)}, name=name, description=description, tags=tags,
            params={} if lr is None else {"lr": lr, "opt": {"name": "adam"}}, feedback=feedback, status=status,
            started_at=datetime(2026, 3, day, tzinfo=UTC),
        ))
    return ids


def names(infos) -> list[str | None]:
    return [i.name for i in infos]


def settle(store: aoe.Store) -> None:
    """Make the index believe its fonts last changed long ago (and were synced since)."""
    db = store.catalog._db()
    db.execute("UPDATE fonts SET changed_ns = changed_ns - 10000000000, synced_ns = synced_ns + 10000000000")


@pytest.fixture
def model() -> TinyFont:
    torch.manual_seed(0)
    return TinyFont()


@pytest.fixture
def hashing(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The names of the address functions (``hash_bytes``: BLAKE3; ``fingerprint``: XXH3)
    the object store calls on contents of 400,000 bytes (a tensor of 100,000 floats), in order."""
    import aoe.objects

    calls: list[str] = []
    for name in ("hash_bytes", "fingerprint"):
        real = getattr(aoe.objects, name)
        monkeypatch.setattr(aoe.objects, name, lambda data, real=real, name=name:
                            (calls.append(name) if memoryview(data).nbytes == 400_000 else None) or real(data))
    return calls


@pytest.fixture
def run_files(tmp_path: Path) -> dict:
    """The non-weight assets of a run, as save_model takes them."""
    return {
        "personality_vector": torch.tensor([0.25, -1.5, 3.0, 0.125]),
        "sample_image": make_png(128, 16),
        "eval_glyphs": {"A": make_png(10), "B": make_png(20), "a": make_png(30)},
        "feedback": {"loss": 0.25, "val_loss": 0.5, "notes": "crisp serifs"},
    }


def object_files(root: Path) -> list[Path]:
    """Every stored object file (bypassing the store)."""
    return sorted(p for p in (root / ".objects").rglob("*") if p.is_file())


def stored_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in object_files(root))


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run ``aoe ARGS`` in this process; returns (exit code, stdout, stderr)."""
    old_argv = sys.argv
    sys.argv = ["aoe", *args]
    try:
        cli.main()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    finally:
        sys.argv = old_argv
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("AOE_STORE", str(tmp_path / "networks"))
    return tmp_path / "networks"


# -- object storage: a real S3-compatible server ----------------------------------

from s3server import SeaweedServer  # noqa: E402


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Remote stores cache objects and catalogs under $AOE_CACHE_DIR: never in $HOME here."""
    monkeypatch.setenv("AOE_CACHE_DIR", str(tmp_path / "aoe-cache"))


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    """One SeaweedFS server for the session, reached with the standard AWS variables."""
    server = SeaweedServer.start(tmp_path_factory.mktemp("seaweed"))
    saved = {k: os.environ.get(k) for k in server.environment()}
    os.environ.update(server.environment())
    try:
        yield server
    finally:
        server.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture
def s3_url(seaweed: SeaweedServer) -> str:
    """A fresh, empty prefix of the test bucket."""
    return seaweed.url(f"t-{uuid.uuid4().hex[:12]}")


@pytest.fixture
def s3_store(s3_url: str) -> aoe.Store:
    return aoe.Store(s3_url)
