"""The root of jobstore's errors, and the errors the record layer (``jobstore.job``,
``jobstore.codec``) raises: below :mod:`jobstore.errors`, importing nothing of jobstore.

Import them from :mod:`jobstore.errors` (or ``jobstore``): that is where they are public, and
what their ``__module__`` says. They live here so that ``jobstore.errors`` can name
:class:`~jobstore.job.Job` (``JobExists.created``, ...) while ``jobstore.job`` raises
:class:`CorruptRecord`, with no import cycle between the two.
"""

from __future__ import annotations


class JobStoreError(Exception):
    """Base class of every jobstore error."""

    __module__ = "jobstore.errors"  # where it is imported from (and pickled by)


class ConfigError(JobStoreError, ValueError):
    """A URL, option or environment variable is missing or invalid."""

    __module__ = "jobstore.errors"  # where it is imported from (and pickled by)


class CorruptRecord(JobStoreError):
    """A stored record cannot be read back as a job: a field every reader relies on is missing or
    holds what jobstore never writes (``created_at`` not a number, a status outside the enum...).

    Raised before anything is written: an operation that meets such a record changes nothing.
    ``key``: the record's key (None when :meth:`Job.from_hash` was given none); ``field``: the
    first field found wrong; ``reason``: what is wrong with it (``missing``, ``not a time (epoch
    seconds or ISO 8601)``, ``not a job status``). Neither the message nor the attributes hold the stored value.
    """

    __module__ = "jobstore.errors"  # where it is imported from (and pickled by)

    def __init__(self, key: str | None, field: str, reason: str):
        self.key = key
        self.field = field
        self.reason = reason
        where = f"record {key!r}" if key is not None else "record"
        super().__init__(f"{where} cannot be decoded: {field}: {reason}")
