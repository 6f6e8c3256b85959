"""One error hierarchy for the whole domain.

Every error carries a message that says what was received and what is valid. The server maps
each class to a gRPC status code in one table, and the client maps the codes back to classes
of the same names: in-process a caller catches ``zoo.errors.NotFound``, over the wire
``client.errors.NotFound`` (the client cannot import ``zoo``, which needs the server extras).
"""

from __future__ import annotations


class ZooError(Exception):
    """Base class of every error this project raises on purpose."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class NotFound(ZooError):
    """A named thing (model, version, weights file, job, dataset) does not exist."""


class InvalidArgument(ZooError):
    """An argument has the wrong type, range or form."""


class AlreadyExists(ZooError):
    """Creating something whose name is taken."""


class FailedPrecondition(ZooError):
    """The request is valid but the system is not in a state to serve it."""


class IntegrityError(ZooError):
    """A file's content does not match its published hash."""


class ResourceExhausted(ZooError):
    """A size, memory or count limit was exceeded."""


class Unauthenticated(ZooError):
    """A token is required and was missing or wrong."""


class Unavailable(ZooError):
    """A dependency or the server is not available right now; retrying may help."""


class Cancelled(ZooError):
    """The operation was cancelled by its caller."""


class DeadlineExceeded(ZooError):
    """The operation ran past its deadline."""


class Internal(ZooError):
    """A bug or an unexpected failure of a dependency."""


class WeightsNotFound(NotFound):
    """A pretrained weights file is not in the local cache and downloading was not allowed."""
