"""Where the synchronous driver lived: :mod:`jobstore.drivers` holds it now (``drivers.common``
the decisions, ``drivers.sync`` the I/O). Every name that was importable here still is."""

from __future__ import annotations

from .connection import MINIMUM as MINIMUM
from .drivers.common import WRITE_COMMANDS as WRITE_COMMANDS
from .drivers.common import _field as _field  # noqa: F401
from .drivers.common import _slots_of as _slots_of
from .drivers.common import _text as _text
from .drivers.common import one_commands_fault as _one_commands_fault  # noqa: F401
from .drivers.common import writes as _writes  # noqa: F401
from .drivers.sync import SyncDriver as SyncDriver
from .drivers.sync import Tidier as Tidier
from .drivers.sync import _local_script_keys as _local_script_keys

__all__ = ["SyncDriver", "Tidier", "WRITE_COMMANDS", "MINIMUM"]
