"""aoe: a content-addressed store for ML training runs.

>>> import aoe
>>> store = aoe.Store("networks")
>>> font_id = store.create_font("fruity")            # "1-fruity"
>>> run_id = store.save_model(font_id, model, vector, "sample.png", "eval-glyphs/", {"loss": 0.1})
>>> weights, vector, info = store.load_model(font_id)

The same calls exist at module level (``aoe.save_model(...)``) on the default store:
``$AOE_STORE``, else ``./networks``.
"""

from __future__ import annotations

from typing import Any

from .aliases import AliasMove
from .errors import (
    ConflictError,
    CorruptObjectError,
    FontExistsError,
    FontFolderMissingError,
    FontNotFoundError,
    FormatError,
    GcRunningError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    ObjectNotFoundError,
    ProtectedRunError,
    RunExistsError,
    RunNotFoundError,
    StorageError,
    StorageFullError,
    StoreError,
    StoreMissingError,
    UnsupportedValueError,
)
from .manifests import FEEDBACK_SCHEMA, FORMAT, FORMAT_REVISION, FORMAT_VERSION, WEIGHTS_VERSION
from .runinfo import COMPLETED, FontSummary, RunInfo
from .store import FAILED, INTERRUPTED, RUNNING, LoadedModel, PendingSave, Run, RunRecorder, Store

__version__ = "0.6.0"

__all__ = [
    "COMPLETED",
    "FAILED",
    "FEEDBACK_SCHEMA",
    "FORMAT",
    "FORMAT_REVISION",
    "FORMAT_VERSION",
    "INTERRUPTED",
    "RUNNING",
    "WEIGHTS_VERSION",
    "AliasMove",
    "ConflictError",
    "CorruptObjectError",
    "FontExistsError",
    "FontFolderMissingError",
    "FontNotFoundError",
    "FontSummary",
    "FormatError",
    "GcRunningError",
    "InvalidInputError",
    "InvalidNameError",
    "LoadedModel",
    "NotFoundError",
    "ObjectNotFoundError",
    "PendingSave",
    "ProtectedRunError",
    "Run",
    "RunExistsError",
    "RunInfo",
    "RunNotFoundError",
    "RunRecorder",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoreError",
    "StoreMissingError",
    "UnsupportedValueError",
    "amend_run",
    "count_runs",
    "create_font",
    "delete_run",
    "describe_run",
    "export_personality",
    "font_summaries",
    "get_run_info",
    "list_fonts",
    "list_runs",
    "load_extra",
    "load_feedback",
    "load_glyphs",
    "load_model",
    "load_personality",
    "load_sample",
    "open_weights",
    "restore_run",
    "run_history",
    "save_in_background",
    "save_model",
    "save_model_from_checkpoint",
    "search",
    "start_run",
    "tag_run",
]


def _on_default_store(name: str) -> Any:
    method = getattr(Store, name)

    def call(*args: Any, **kwargs: Any) -> Any:
        return getattr(Store(), name)(*args, **kwargs)

    call.__name__ = call.__qualname__ = name
    call.__doc__ = f"``Store().{name}(...)`` on the default store ($AOE_STORE or ./networks).\n\n{method.__doc__ or ''}"
    return call


create_font = _on_default_store("create_font")
list_fonts = _on_default_store("list_fonts")
save_model = _on_default_store("save_model")
save_in_background = _on_default_store("save_in_background")
load_model = _on_default_store("load_model")
list_runs = _on_default_store("list_runs")
get_run_info = _on_default_store("get_run_info")
start_run = _on_default_store("start_run")
load_personality = _on_default_store("load_personality")
export_personality = _on_default_store("export_personality")
load_sample = _on_default_store("load_sample")
load_glyphs = _on_default_store("load_glyphs")
load_feedback = _on_default_store("load_feedback")
load_extra = _on_default_store("load_extra")
open_weights = _on_default_store("open_weights")
search = _on_default_store("search")
count_runs = _on_default_store("count_runs")
font_summaries = _on_default_store("font_summaries")
save_model_from_checkpoint = _on_default_store("save_model_from_checkpoint")
amend_run = _on_default_store("amend_run")
tag_run = _on_default_store("tag_run")
describe_run = _on_default_store("describe_run")
run_history = _on_default_store("run_history")
delete_run = _on_default_store("delete_run")
restore_run = _on_default_store("restore_run")
