"""Errors raised by daskavatar.

Every error the library raises on purpose derives from :class:`DaskAvatarError`, so a caller
(the CLI, the REST API, a notebook) can catch one class. Subclasses also derive from the
matching built-in exception, so code that already catches ``ValueError`` or
``FileNotFoundError`` keeps working::

    DaskAvatarError
    ├── JobSpecError(ValueError)         invalid job JSON or config value
    ├── InputNotFoundError(FileNotFoundError)
    │                                    an input glob or URL matched no image
    ├── OutputPathError(OSError)         the output path cannot be written
    ├── JobStateError(FileExistsError)   the output path contains the outputs of another job,
    │                                    or another client may still be writing to it
    ├── PluginError(RuntimeError)        a plugin cannot be built, installed or loaded
    ├── ClusterError(ConnectionError)    the Dask scheduler cannot be reached
    └── StageError(RuntimeError)         a job stage failed as a whole

Per-image and per-identity failures are not exceptions: they become records with a reason code
in the job report (see :mod:`daskavatar.jobs.report`).
"""


class DaskAvatarError(Exception):
    """Base class of the errors daskavatar raises on purpose."""


class JobSpecError(DaskAvatarError, ValueError):
    """The job JSON or one of its config values is invalid."""


class InputNotFoundError(DaskAvatarError, FileNotFoundError):
    """An input glob or URL matched no image."""


class OutputPathError(DaskAvatarError, OSError):
    """The output path cannot be created or written."""


class JobStateError(DaskAvatarError, FileExistsError):
    """The output path contains the manifest of a different job or an unreadable manifest.

    Also raised when another client may still be writing to the output path.
    """


class PluginError(DaskAvatarError, RuntimeError):
    """A plugin package cannot be built, installed on the cluster or loaded."""


class ClusterError(DaskAvatarError, ConnectionError):
    """The Dask scheduler cannot be reached."""


class StageError(DaskAvatarError, RuntimeError):
    """A job stage failed as a whole, for example because every task in it failed."""
