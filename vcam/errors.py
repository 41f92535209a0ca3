"""Errors a user can cause or fix: the CLI prints their message (no traceback) and exits with code 2."""


class UserError(Exception):
    """Bad input or a missing piece the user can fix; the message says what was wrong and what to do."""


class SourceError(UserError):
    """A source spec or device that cannot be used (unknown spec, missing file, no such camera)."""


class SourceUnavailable(Exception):
    """A source that worked went away (camera unplugged or busy); the capture thread reconnects."""


class SinkError(UserError):
    """A sink spec or device that cannot be used (unknown spec, no virtual camera driver, port in use)."""


class ConfigError(UserError):
    """An invalid configuration value; the message names the key, the value and what is allowed."""


class MissingDependencyError(UserError):
    """An optional dependency is not installed; the message names the extra to install."""


class RemoteError(UserError):
    """Remote mode: a server setting that cannot be used, or a request the server refuses (bad offer, full)."""
