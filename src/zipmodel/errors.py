"""The one error hierarchy of zipmodel.

Every error derives from :class:`ZipmodelError` and also from the built-in exception a caller
would already catch (``ValueError`` for bad data, ``ImportError`` for a missing extra, ...).
Messages start in lower case, name the file and say what is wrong, with numbers where there are
numbers; the CLI turns them into one line on stderr and an exit code (see ``zipmodel.cli``).
"""

from __future__ import annotations

import os

__all__ = [
    "BaseMismatchError",
    "CT2Error",
    "CorruptDataError",
    "FormatError",
    "GGUFError",
    "HubError",
    "MissingDependencyError",
    "OutputExistsError",
    "SafetensorsError",
    "SourceFormatError",
    "TorchFormatError",
    "UnknownCodecError",
    "UnsupportedError",
    "VerifyMismatchError",
    "ZipmodelError",
]


class ZipmodelError(Exception):
    """Base class of every error zipmodel raises on purpose.

    ``path`` names the file concerned (``None`` for in-memory data); ``hint`` is the next
    thing to try, shown by the CLI after the message.
    """

    def __init__(self, message: str, *, path: str | os.PathLike | None = None, hint: str = ""):
        self.path = os.fspath(path) if path is not None else None
        self.hint = hint
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)

    def with_path(self, path: str | os.PathLike) -> ZipmodelError:
        """Return this error naming ``path`` (used where the lower layers had no file name)."""
        if self.path is None:
            self.path = os.fspath(path)
            self.args = (f"{self.path}: {self.message}",)
        return self


class FormatError(ZipmodelError, ValueError):
    """The data is not a valid container (or source) of the kind expected."""

    def __init__(self, message: str, *, path=None, offset: int | None = None, hint: str = ""):
        self.offset = offset
        if offset is not None:
            message = f"{message} (at byte {offset})"
        super().__init__(message, path=path, hint=hint)


class SourceFormatError(FormatError):
    """A source file is not valid in the format it claims (the reason is the message). Readers
    raise a subclass; ``read_layout`` then compresses the file as opaque bytes (with a note)
    or, when that format was asked for, raises :class:`FormatError` naming the file."""


class SafetensorsError(SourceFormatError):
    """The file is not a valid safetensors file."""


class TorchFormatError(SourceFormatError):
    """The file is not a PyTorch checkpoint this reader understands (zip or legacy pickle)."""


class GGUFError(SourceFormatError):
    """The file is not a valid GGUF file."""


class CT2Error(SourceFormatError):
    """Not a CTranslate2 model file this reader understands."""


class CorruptDataError(FormatError):
    """The container is well formed but its content is damaged (checksum or decoder failure)."""


class UnsupportedError(ZipmodelError, ValueError):
    """Valid, but uses a feature this version cannot handle (newer format, unknown transform)."""


class UnknownCodecError(UnsupportedError):
    """A frame names a codec id that is not registered."""

    def __init__(self, codec_id: int | str, *, path=None):
        self.codec_id = codec_id
        super().__init__(
            f"unknown codec id {codec_id!r}",
            path=path,
            hint="the file may come from a newer zipmodel: pip install -U zipmodel",
        )


class MissingDependencyError(ZipmodelError, ImportError):
    """An optional extra is needed; ``hint`` holds the install command."""


class OutputExistsError(ZipmodelError, FileExistsError):
    """The output exists and ``force`` was not given."""


class BaseMismatchError(ZipmodelError, ValueError):
    """A container stored against a base model (``compress --base``) was given no base, or
    one with another SHA-256; the message names the SHA-256 expected (CLI exit code 1)."""


class VerifyMismatchError(ZipmodelError):
    """Verification decoded the container but the result does not match (CLI exit code 3)."""


class HubError(ZipmodelError, OSError):
    """The Hugging Face Hub refused or failed a request (missing repo or revision, bad token,
    no network); ``hint`` is the next command to try."""
