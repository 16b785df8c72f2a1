"""One error hierarchy, so the CLI can print user mistakes as one line.

Every error a user can cause (bad config, unreadable file, missing model, corrupt
watchlist) derives from :class:`StreamprocError`; anything else is a bug and keeps
its traceback.
"""


class StreamprocError(Exception):
    """Base class: a problem the user can fix; the message is shown as one line."""


class ConfigError(StreamprocError):
    """Invalid configuration value or file."""


class ModelError(StreamprocError):
    """A model file is missing, corrupt, has the wrong hash, or cannot run."""


class ProviderError(ModelError):
    """The configured execution provider (e.g. a GPU) is not available."""


class ImageError(StreamprocError):
    """An image file could not be read or decoded."""


class EnrolmentError(StreamprocError):
    """An enrolment was refused (no face, several faces, poor quality, duplicate)."""


class WatchlistError(StreamprocError):
    """The watchlist is missing, corrupt, inconsistent, or made by another model."""


class SourceError(StreamprocError):
    """A video source could not be opened or decoded."""
