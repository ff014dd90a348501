"""Typed errors. Every error names what was wrong; the API maps `http_status` to its answer."""

from __future__ import annotations


class ToonboothError(Exception):
    """Base class of every error toonbooth raises on purpose."""

    http_status = 500


class InputError(ToonboothError, ValueError):
    """A user-supplied value is unusable. `field` names the argument (as in the JobSpec / API body)."""

    http_status = 422

    def __init__(self, field: str, message: str, value: object = None):
        self.field = field
        self.message = message
        self.value = value
        super().__init__(f"`{field}`: {message}")

    def renamed(self, field: str) -> InputError:
        """The same error (same class, message and value) reported under another field name — e.g. a
        spec field mapped back to the name a client sent (`sampler_name`, `override_settings.*`)."""
        clone = type(self).__new__(type(self))
        InputError.__init__(clone, field, self.message, self.value)
        return clone


class InputTooLargeError(InputError):
    """Bytes or pixels over a configured limit."""

    http_status = 413


class ModelError(ToonboothError):
    """A model file or id cannot be used (missing, wrong kind, unsafe format)."""

    http_status = 400


class ModelNotFoundError(ModelError):
    http_status = 404


class UnsafeModelFormatError(ModelError):
    """Pickle-based files (.ckpt/.pt/.bin) are never loaded from a models folder."""


class OfflineError(ModelError):
    """A download was needed but the model hub cannot be reached."""

    http_status = 503


class BackendUnavailableError(ToonboothError):
    """The requested backend cannot run here (e.g. neural without weights)."""

    http_status = 409


class JobCanceledError(ToonboothError):
    """Raised inside an engine at a step boundary when the job was canceled. An engine that can return
    what it made so far (A1111's `/interrupt`: the current latents decoded) passes it as `partial` (its
    Output); the runner stores it with the canceled job."""

    http_status = 409

    def __init__(self, message: str = "", partial: object = None):
        super().__init__(message)
        self.partial = partial


class NotFoundError(ToonboothError):
    """A job, upload, result or style that does not exist *for this user* (others' things are 404 too)."""

    http_status = 404


class LimitError(ToonboothError):
    """A per-user or service limit was reached (queued jobs, rate)."""

    http_status = 429


class AuthError(ToonboothError):
    http_status = 401
