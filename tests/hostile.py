"""Planting hostile bytes in a store, past every check a save makes, and running readers
as a user would (a child process under a memory limit, the command line): the helpers
of the tests of hostile and damaged stores (test_hostile.py, test_isolation.py)."""

from __future__ import annotations

import resource
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import msgpack

import aoe
from aoe.codec import hash_bytes
from aoe.layout import object_key
from aoe.manifests import FORMAT

RUN_ID = "20260111T083000.000000Z-0000"
SAVED = "2026-01-11T09:00:00.000000Z"


def manifest_fields(font: str, **fields: Any) -> dict[str, Any]:
    return {"format": FORMAT, "version": 1, "font_id": font, "run_id": RUN_ID, "status": "completed",
            "saved_at": SAVED, **fields}


def put_raw_object(store: aoe.Store, stored: bytes, content_digest: str | None = None) -> str:
    """Store bytes as the object named ``content_digest`` (default: a digest of them), unchecked."""
    digest = content_digest or hash_bytes(stored)
    store.backend.write(object_key(digest), [stored], exclusive=False)
    return digest


def plant_run(store: aoe.Store, font: str, data: bytes, run_id: str = RUN_ID) -> str:
    """Publish ``data`` as a run's manifest, past every check a save makes."""
    digest = store.objects.put(data)
    assert store.refs.create_run(font, run_id, digest)
    return digest


def plant_fields(store: aoe.Store, font: str, run_id: str = RUN_ID, **fields: Any) -> str:
    fields = manifest_fields(font, run_id=run_id, **fields)
    return plant_run(store, font, msgpack.packb(fields, use_bin_type=True), run_id)


def a_blob(store: aoe.Store, content: bytes) -> dict[str, Any]:
    return {"size": len(content), "chunks": [store.objects.put(content)]}


def run_limited(code: str, *, memory_mb: int = 1024, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run Python ``code`` in a child under an address-space limit."""
    limit = memory_mb * 1024 * 1024

    def limit_memory() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=timeout, preexec_fn=limit_memory)


def aoe_cli(root: Path, *args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "aoe", "store", "--root", str(root), *args],
                          capture_output=True, text=True, timeout=timeout, cwd=cwd)


def assert_one_line_error(result: subprocess.CompletedProcess[str], code: int) -> None:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines and lines[-1].startswith("aoe: error: "), result.stderr
