"""Every error aoe raises, under one root: :class:`StoreError`.

Each leaf also inherits the built-in it behaves like (``KeyError`` for things that
are not there, ``ValueError`` for bad input) so callers can catch either. Messages
say what is wrong and what to do next; the CLI prints them as one line.
"""

from __future__ import annotations


class StoreError(Exception):
    """Root of every error raised by aoe."""

    def __str__(self) -> str:  # KeyError would repr-quote the message otherwise
        return str(self.args[0]) if self.args else self.__class__.__name__


class NotFoundError(StoreError, KeyError):
    """Something asked for by name does not exist."""


class StoreMissingError(NotFoundError):
    """The store's root folder does not exist (never created, moved or deleted)."""


class FontNotFoundError(NotFoundError):
    """The font id is not in the store."""


class FontFolderMissingError(NotFoundError):
    """A font exists but its ``runs/`` folder was removed outside aoe."""


class RunNotFoundError(NotFoundError):
    """The run id is not in the font."""


class ObjectNotFoundError(NotFoundError):
    """An object named by a ref or a manifest is missing from ``.objects/``."""


class InvalidNameError(StoreError, ValueError):
    """A font id, run id, glyph name or other path-forming name is malformed."""


class InvalidInputError(StoreError, ValueError):
    """An argument cannot be stored as given (not a PNG, not JSON, wrong type...)."""


class UnsupportedValueError(InvalidInputError, TypeError):
    """A value inside a weights tree has no lossless, pickle-free representation."""


class FontExistsError(StoreError, FileExistsError):
    """The font id (or its number, or its name) is already taken."""


class RunExistsError(StoreError, FileExistsError):
    """A run with that exact id exists already (when importing with fixed ids)."""


class ConflictError(StoreError):
    """Another process changed what this one was changing, meanwhile (an alias moved by
    two at once): nothing was written; look again and retry."""


class ProtectedRunError(InvalidInputError):
    """The run is named by an alias: deleting or forgetting it needs ``force``."""


class CorruptObjectError(StoreError):
    """An object's content no longer matches its address, or cannot be decoded."""

    def __init__(self, message: str, *, digest: str | None = None, why: str | None = None) -> None:
        super().__init__(message)
        self.digest = digest
        self.why = why


class FormatError(StoreError):
    """A manifest or ref is malformed or of a format version this aoe cannot read."""


class NewerFormatError(FormatError):
    """A manifest of a format version newer than this aoe reads: upgrade aoe."""


class MismatchedManifestError(FormatError):
    """A run's ref names the manifest of another run (a ref copied or edited by hand)."""


class UnexpectedFileError(FormatError):
    """A file in the store is not what aoe writes there: a symlink, a FIFO or device, or
    larger than any object. It is refused unread."""


class GcRunningError(StoreError):
    """Another gc holds the store's gc lock."""


class StorageError(StoreError, OSError):
    """The storage underneath failed (I/O error, permission, removed folder)."""


class StorageFullError(StorageError):
    """The disk is full: nothing was published, and nothing partial was left."""
