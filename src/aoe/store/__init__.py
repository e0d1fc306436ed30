"""The public API: a store of fonts and their training runs.

A save validates every input first, writes blobs, then the manifest, then creates
the run's ref: a run is all there or not there, whatever happens in between. Every
read verifies the hashes of what it returns.

Torch is imported only by the calls that build or return tensors, so browsing a store
(``list_runs``, ``get_run_info``, ``read_object``...) starts fast.
"""

from __future__ import annotations

from .background import PendingSave
from .base import DEFAULT_ROOT, StoreBase, default_root
from .fonts import Fonts
from .history import History
from .lineage import LineageNode, ParentSpec
from .reading import Reading
from .run import FEEDBACK_DEFAULTS, LoadedModel, Run
from .saving import FAILED, INTERRUPTED, RUNNING, RunRecorder, Saving, run_metadata


class Store(Fonts, Saving, History, Reading):
    """Fonts and runs under one root: a folder, or ``s3://bucket/prefix`` on an
    S3-compatible object store (created on first write).

    The methods come in parts, each a module of this package: ``base`` (where the store
    is, its catalog, a handle on one run, what a run's name means), ``fonts``, ``saving``,
    ``lineage`` (parents, children), ``aliasing`` (aliases), ``history`` (amend, delete,
    restore) and ``reading`` (list, search, load, export).
    """


__all__ = [
    "DEFAULT_ROOT", "FAILED", "FEEDBACK_DEFAULTS", "INTERRUPTED", "RUNNING", "LineageNode", "LoadedModel",
    "ParentSpec", "PendingSave", "Run",
    "RunRecorder",
    "Store", "StoreBase", "default_root", "run_metadata",
]
