"""One published run: its verified manifest, and its assets read on demand (weights,
personality vector, images, feedback, extras), or exported as a folder."""

from __future__ import annotations

import functools
import importlib.util
import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NamedTuple, TypeVar

from ..backends.files import atomic_write, fsync_dir, with_retries
from ..errors import (
    CorruptObjectError,
    FormatError,
    InvalidInputError,
    NotFoundError,
    ObjectNotFoundError,
)
from ..layout import TEMP_PREFIX
from ..limits import parse_json
from ..manifests import FEEDBACK_SCHEMA, Manifest
from ..names import (
    Digest,
    random_hex,
)
from ..objects import Blob, ObjectStore
from ..runinfo import RunInfo

if TYPE_CHECKING:
    import torch

if TYPE_CHECKING:
    pass

T = TypeVar("T")

FEEDBACK_DEFAULTS: dict[str, dict[str, Any]] = {
    "1.0": {"final_loss": None, "val_loss": None, "epochs": None, "glyph_loss": {}, "notes": ""},
}
"""The optional fields of each feedback schema, with the values a run that lacks them gets."""


class LoadedModel(NamedTuple):
    """What :meth:`Store.load_model` returns; unpacks as ``weights, vector, metadata``."""

    weights: Any
    personality_vector: torch.Tensor | None
    metadata: RunInfo


def _naming_the_run(method: Callable[..., T]) -> Callable[..., T]:
    """Add the run to errors about its objects, so a damaged blob names what it breaks."""

    @functools.wraps(method)
    def wrapper(self: Run, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except (CorruptObjectError, ObjectNotFoundError) as exc:
            named = type(exc)(f"{exc} (needed by run {self.manifest.run_id} of {self.manifest.font_id})")
            named.__dict__.update(exc.__dict__)
            raise named from None

    return wrapper


class Run:
    """One published run: its verified manifest, and its assets read on demand."""

    def __init__(self, objects: ObjectStore, manifest: Manifest, digest: Digest) -> None:
        self.objects = objects
        self.manifest = manifest
        self.digest = digest

    @functools.cached_property
    @_naming_the_run
    def info(self) -> RunInfo:
        return RunInfo.read(self.manifest, self.digest, self.objects)

    def __repr__(self) -> str:
        return f"Run({self.manifest.font_id!r}, {self.manifest.run_id!r})"

    @property
    def logical_bytes(self) -> int:
        """Everything the run holds, uncompressed and counted as if stored alone."""
        return self.manifest.logical_bytes

    @_naming_the_run
    def load(self, map_location: Any = "cpu", keys: Iterable[Any] | None = None) -> LoadedModel:
        """Weights (only the top-level entries ``keys``, if given) and personality vector,
        all tensors read in parallel."""
        from .. import weights as tensors

        weights = self._need(self.manifest.weights, "weights")
        if keys is not None:
            weights = tensors.select(weights, keys)
        weights, vector = tensors.load_trees(self.objects, [weights, self.manifest.personality], map_location)
        return LoadedModel(weights, vector, self.info)

    def open_weights(self, map_location: Any = "cpu") -> Any:
        """The weights as a mapping that reads a tensor only when it is accessed."""
        from .. import weights as tensors

        return tensors.LazyWeights(self.objects, self._need(self.manifest.weights, "weights"), map_location)

    @_naming_the_run
    def personality_vector(self, map_location: Any = "cpu") -> torch.Tensor:
        from .. import weights as tensors

        record = self._need(self.manifest.personality, "personality vector")
        vector: torch.Tensor = tensors.load_trees(self.objects, [record], map_location)[0]
        return vector

    @_naming_the_run
    def extra(self, name: str, map_location: Any = "cpu") -> Any:
        from .. import weights as tensors

        if name not in self.manifest.extras:
            known = ", ".join(self.manifest.extras) or "none"
            raise NotFoundError(f"{self._what} has no extra {name!r} (extras: {known})")
        return tensors.load_trees(self.objects, [self.manifest.extras[name]], map_location)[0]

    @_naming_the_run
    def sample(self) -> bytes:
        return self.objects.get_blob(self._need(self.manifest.sample, "sample image"))

    @_naming_the_run
    def glyphs(self) -> dict[str, bytes]:
        return {name: self.objects.get_blob(blob) for name, blob in self.manifest.glyphs.items()}

    @_naming_the_run
    def feedback_bytes(self) -> bytes:
        """The feedback JSON exactly as it was saved."""
        return self.objects.get_blob(self._need(self.manifest.feedback, "feedback"))

    def feedback(self, with_defaults: bool = False) -> Any:
        """The feedback; ``with_defaults`` fills the optional fields its schema
        defines (:data:`FEEDBACK_DEFAULTS`) that an older trainer left out."""
        try:
            feedback = parse_json(self.feedback_bytes())
        except ValueError as exc:  # verified bytes, but not what a save accepts
            raise FormatError(f"the feedback of {self._what} is not readable JSON ({exc})") from None
        if with_defaults and isinstance(feedback, dict):
            defaults = FEEDBACK_DEFAULTS.get(self.manifest.feedback_schema or FEEDBACK_SCHEMA, {})
            feedback = {**json.loads(json.dumps(defaults)), **feedback}
        return feedback

    def export_personality(self, path: str | os.PathLike[str]) -> Path:
        """The personality vector in a file of its own: ``.pt``, ``.json`` or ``.npy``."""
        path = Path(path)
        if path.suffix not in (".pt", ".json", ".npy"):
            raise InvalidInputError(f"cannot export to {path.name}: use a .pt, .json or .npy file name")
        vector = self.personality_vector()

        def write(file: BinaryIO) -> None:
            if path.suffix == ".json":
                data = {"dtype": str(vector.dtype).removeprefix("torch."), "shape": list(vector.shape),
                        "values": vector.tolist()}
                file.write(json.dumps(data).encode())
            elif path.suffix == ".npy":
                import numpy

                numpy.save(file, vector.numpy(), allow_pickle=False)
            else:
                import torch

                torch.save(vector, file)

        with_retries(lambda: atomic_write(path, write, exclusive=False), f"writing {path}")
        return path

    @_naming_the_run
    def export_weights(self, dest: str | os.PathLike[str], format: str | None = None,
                       key: str | None = None) -> tuple[Path, list[tuple[str, str]]]:
        """The weights (or their top-level entry ``key``) in one new file for tools that
        do not know aoe: ``pt`` (``torch.save``; everything, ties kept) or
        ``safetensors`` (a flat mapping of tensors; see :func:`aoe.weights.flat_tensors`).
        ``format`` defaults to DEST's suffix. Every byte is verified on the way; DEST must
        not exist. Returns DEST and the tensors written as copies of the one they were
        tied to (safetensors only)."""
        path = Path(dest)
        format = format or path.suffix.lstrip(".")
        if format not in ("pt", "safetensors"):
            raise InvalidInputError(f"cannot export weights as {format!r}: use --format pt or safetensors "
                                    "(or a DEST ending in .pt or .safetensors)")
        if path.exists() or path.is_symlink():
            raise InvalidInputError(f"{path} already exists; export writes only a new file")
        if format == "safetensors" and importlib.util.find_spec("safetensors") is None:
            raise InvalidInputError("exporting safetensors needs the safetensors package: pip install 'aoe[safetensors]'")
        from .. import weights as tensors  # torch: only once the arguments are known to be good

        weights = self.load(keys=None if key is None else [key]).weights
        weights = weights[key] if key is not None else weights
        tied: list[tuple[str, str]] = []
        if format == "pt":
            import torch

            def write(file: BinaryIO) -> None:
                torch.save(weights, file)
        else:
            from safetensors.torch import save

            flat, tied = tensors.flat_tensors(weights)
            data = save(flat, metadata={"format": "pt", "aoe_font": self.manifest.font_id,
                                        "aoe_run": self.manifest.run_id, "aoe_manifest": self.digest})

            def write(file: BinaryIO) -> None:
                file.write(data)
        path.parent.mkdir(parents=True, exist_ok=True)
        if not with_retries(lambda: atomic_write(path, write, exclusive=True), f"writing {path}"):
            raise InvalidInputError(f"{path} appeared while it was being written; nothing was overwritten")
        return path, tied

    def export(self, dest: str | os.PathLike[str]) -> Path:
        """Write the run as a folder in the spec's layout, every blob verified on the way.

        ``weights.pt``, ``personality_vector.pt``, ``extras/<name>.pt`` (torch files that
        ``torch.load(weights_only=True)`` reads), ``sample.png``, ``eval-glyphs/<glyph>.png``,
        ``feedback.json`` (byte for byte as saved) and ``run.json`` (the metadata). The
        folder is built beside ``dest`` and renamed into place: it appears whole or not at
        all. Every file is new (two names one file system takes as the same, glyphs ``A``
        and ``a`` where case is ignored, are an error, not one overwriting the other), and
        nothing is written through a symlink.
        """
        dest = Path(dest)
        if dest.is_symlink():
            raise InvalidInputError(f"{dest} is a symlink; export writes only into a real, new folder")
        if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
            raise InvalidInputError(f"{dest} already exists and is not empty; choose a new folder")
        import torch  # only once the destination is known to be good (seconds to import)

        dest.parent.mkdir(parents=True, exist_ok=True)
        manifest = self.manifest
        files: list[tuple[str, Any]] = []
        if manifest.weights is not None:
            files.append(("weights.pt", lambda f: torch.save(self.load().weights, f)))
        if manifest.personality is not None:
            files.append(("personality_vector.pt", lambda f: torch.save(self.personality_vector(), f)))
        files += [(f"extras/{name}.pt", lambda f, name=name: torch.save(self.extra(name), f))
                  for name in manifest.extras]
        if manifest.sample is not None:
            files.append(("sample.png", self._streamed(manifest.sample)))
        files += [(f"eval-glyphs/{glyph}.png", self._streamed(blob)) for glyph, blob in manifest.glyphs.items()]
        if manifest.feedback is not None:
            files.append(("feedback.json", self._streamed(manifest.feedback)))
        meta = {k: v for k, v in self.info.to_dict().items() if v not in (None, [], {})}
        files.append(("run.json", [(json.dumps(meta, indent=2) + "\n").encode()]))
        temp = dest.with_name(f"{TEMP_PREFIX}{random_hex(4)}-{dest.name}")
        temp.mkdir()
        try:
            for name, content in files:
                path = temp / name
                path.parent.mkdir(exist_ok=True)
                if not with_retries(lambda: atomic_write(path, content, exclusive=True), f"writing {path}"):
                    raise InvalidInputError(
                        f"{name} would overwrite another file of this run (a file system that ignores "
                        "case?); export to a case-sensitive file system")
            for folder in (temp / "extras", temp / "eval-glyphs", temp):
                if folder.is_dir():
                    fsync_dir(folder)
            if dest.exists():
                dest.rmdir()
            os.replace(temp, dest)
            fsync_dir(dest.parent)
        finally:
            if temp.exists():
                import shutil  # only on a failed export

                shutil.rmtree(temp)
        return dest

    def _streamed(self, blob: Blob) -> Callable[[BinaryIO], None]:
        """Write a blob into a file chunk by chunk, each verified: one chunk in memory at a time."""
        @_naming_the_run
        def write(run: Run, file: BinaryIO) -> None:
            for chunk in run.objects.iter_blob(blob):
                file.write(chunk)

        return functools.partial(write, self)

    @property
    def _what(self) -> str:
        return f"run {self.manifest.run_id} of {self.manifest.font_id} ({self.manifest.status})"

    def _need(self, value: Any, what: str) -> Any:
        if value is None:
            raise NotFoundError(
                f"{self._what} has no {what}; pick another run from "
                f"`aoe store ls {self.manifest.font_id}`"
            )
        return value
