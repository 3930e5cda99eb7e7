"""One exception tree for smaskd.

Every exception here pickles (workers send them back to the daemon across a process
boundary), so all constructor arguments are positional-or-keyword with defaults and are
kept in ``args``. The daemon maps each class to an exit code / quarantine decision in one
table (``EXIT_CODES``); the core never decides.
"""

from __future__ import annotations

__all__ = [
    "EXIT_CODES",
    "ConfigError",
    "DataLossError",
    "IncompleteInputError",
    "InputError",
    "InternalError",
    "NotWritableError",
    "OutputError",
    "SmaskdError",
    "UnsafeArchiveError",
    "exit_code_for",
]


class SmaskdError(Exception):
    """Base of every error smaskd raises on purpose.

    ``where`` names the place in the input (a JSON path, an item id, a zip member, a line),
    so a user can find the problem without a debugger.
    """

    def __init__(self, message: str = "", where: str | None = None) -> None:
        super().__init__(message, where)
        self.message = message
        self.where = where

    def __str__(self) -> str:
        if self.where:
            return f"{self.where}: {self.message}"
        return self.message

    def __reduce__(self):  # keep notes and subclass across pickling
        return (type(self), (self.message, self.where), {"__notes__": getattr(self, "__notes__", [])})

    def __setstate__(self, state: dict) -> None:
        notes = state.get("__notes__") or []
        for note in notes:
            self.add_note(note)


class InputError(SmaskdError):
    """The input data is wrong: bad JSON, an undeclared colour, a malformed labelmap line."""


class IncompleteInputError(InputError):
    """The input ends before its syntax does (JSON cut short at the end of the file).

    Its own class because a watch folder must tell "this file is wrong" from "this file is
    not finished yet": the daemon waits for the second (its writer may still be writing) and
    fails the first. For the CLI it is an input error like any other.
    """


class UnsafeArchiveError(InputError):
    """A zip that could hurt us (slip names, bombs, symlinks, overlapping entries)."""


class DataLossError(InputError):
    """CVAT would silently lose data here; we refuse unless the user opts into that."""


class OutputError(SmaskdError):
    """Writing the result failed (disk full, permissions)."""


class NotWritableError(OutputError):
    """A file or folder smaskd must create or write cannot be (permissions, a read-only
    filesystem): the fix is the operator's (chown, chmod, remount), so it has its own code."""


class ConfigError(SmaskdError):
    """The configuration is invalid; ``where`` is the key path (``rules[1].action``)."""


class BusyError(SmaskdError):
    """Try again later: the resource is held by a live process (a daemon with our host id)."""


class JournalError(SmaskdError):
    """The journal cannot be written now (``state_dir`` full, SQLite locked by another
    process): the daemon waits and retries; never the failure of a job."""


class InternalError(SmaskdError):
    """A bug in smaskd itself."""


# sysexits.h: 65 EX_DATAERR, 73 EX_CANTCREAT, 74 EX_IOERR, 75 EX_TEMPFAIL, 78 EX_CONFIG,
# 70 EX_SOFTWARE
EXIT_CODES: dict[type[SmaskdError], int] = {
    InputError: 65,
    NotWritableError: 73,
    OutputError: 74,
    ConfigError: 78,
    BusyError: 75,
    InternalError: 70,
}


def exit_code_for(exc: BaseException) -> int:
    """The process exit code for an exception, most specific class first."""
    for cls in type(exc).__mro__:
        if cls in EXIT_CODES:
            return EXIT_CODES[cls]
    if isinstance(exc, OSError):
        return 74
    return 70
