"""The errors a command reports in one line, with exit 2: the operator asked for something
that cannot be done as asked. A leaf module, so that :mod:`service.cli` catches them
without importing the store."""

from __future__ import annotations


class UsageError(Exception):
    """A command's arguments name nothing it can act on, or ask for what it cannot do."""


class NotFound(UsageError):
    """No paper or file fits what the operator typed, or several do (listed)."""


class NewerDatabase(UsageError):
    """The database was migrated by a newer paperboy: this one does not know its revision."""
