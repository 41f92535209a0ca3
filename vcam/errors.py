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


class UnknownStyleError(UserError):
    """A style name that is in no list: not classic, not in the catalogue, not in the user's config."""


class WeightsError(UserError):
    """Model weights that cannot be used: a download, verification or look-up failed, or a file is missing,
    unreadable or does not fit the model; the message names the file and says what to do."""


class OfflineError(WeightsError):
    """The Hub cannot be reached (HF_HUB_OFFLINE set, or no network) and files are missing."""


class GatedModelError(WeightsError):
    """The repository needs its licence accepted on its model page and a logged-in token."""


class RemoteMissingError(WeightsError):
    """A repository, revision or file of the catalogue is not on the Hub (the catalogue is outdated)."""


class PartialDownloadError(WeightsError):
    """A download stopped before the file was complete."""


class CorruptWeightsError(WeightsError):
    """A file on disk does not match the catalogue's sha256 or size."""


class NotDownloadedError(WeightsError):
    """A style's weights are not (all) on disk."""


class DiskSpaceError(WeightsError):
    """Not enough free disk space for a download."""


class RemoteError(UserError):
    """Remote mode: a server setting that cannot be used, or a request the server refuses (bad offer, full)."""


class ControlError(UserError):
    """The camera's local control API cannot be reached or used (no control file, a refused request)."""


class CameraProcessError(Exception):
    """The tray's camera child process could not be started or kept running (bad config, a crash loop)."""
