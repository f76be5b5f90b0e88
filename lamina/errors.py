"""Every error lamina raises on purpose; each message names what was wrong."""

from __future__ import annotations

import difflib


class LaminaError(Exception):
    """Base of lamina's errors."""


class DoesNotExist(LaminaError, LookupError):
    pass


class MultipleResultsFound(LaminaError, LookupError):
    pass


class InvalidPath(LaminaError, ValueError):
    pass


class InstanceError(LaminaError):
    """No instance, or a root that another instance manages."""


class FieldError(LaminaError, AttributeError, ValueError):
    """An unknown field or comparator."""


class ValidationError(LaminaError, ValueError):
    """A value that does not fit its field."""


class PermissionDenied(LaminaError, PermissionError):
    """The credentials in force may not do what was asked (e.g. write to a read-only bucket)."""


class CommitConflict(LaminaError):
    """A commit kept losing the race against other writers."""


def did_you_mean(name: str, choices) -> str:
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown_field(name: str, registry: str, choices) -> FieldError:
    return FieldError(f"unknown field {name!r} on {registry}{did_you_mean(name, choices)}")
