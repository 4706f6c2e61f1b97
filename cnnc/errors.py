"""The error tree: every mistake a user can make is a CnncError.

`diagnostics.format_error` renders one the way the command line prints it.
"""

from __future__ import annotations


class CnncError(Exception):
    """Root of all user-facing errors. Carries an optional source position."""

    def __init__(self, message: str, file: str | None = None, line: int | None = None,
                 column: int | None = None, source_line: str | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.source_line = source_line

    def at(self, pos) -> CnncError:
        """Attach a `Pos` (file, line, column) if the error has none yet."""
        if self.line is None and pos is not None:
            self.file, self.line, self.column = pos.file, pos.line, pos.column
        return self

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.file or '<source>'}:{self.line}:{self.column}: {self.message}"
        if self.file:
            return f"{self.file}: {self.message}"
        return self.message


class CnncSyntaxError(CnncError):
    """The text does not follow the grammar."""


class CnncNameError(CnncError):
    """Unknown layer, block, argument or parameter; duplicate label; recursion."""


class CnncImportError(CnncError):
    """A missing, unreadable or cyclic import."""


class CnncShapeError(CnncError):
    """Shapes do not fit: kernel larger than input, branches disagree, ..."""


class CnncValueError(CnncError):
    """A value out of range: zero depth, bad padding, division by zero, ..."""


class CnncWeightError(CnncError):
    """A weights mapping or file that does not match the network."""


class CnncInputError(CnncError):
    """An input array of the wrong shape or type."""


class CnncMemoryError(CnncError):
    """Work that would need more memory than the limit (default: what is available)."""


class CnncArtifactError(CnncError):
    """A .cnnc file that is corrupt, truncated or of another version."""
