"""jobstore: background-job records in Redis behind pluggable key-schema strategies.

    store = jobstore.open("redis://localhost:6379/0", strategy="dual")
    job = store.enqueue("ws1", "summarise", {"doc": 42})
"""

from .codec import Codec, JSONCodec
from .dead_letters import DeadLetter
from .errors import (
    AuthenticationFailed,
    ConfigError,
    CorruptRecord,
    EvictionPolicyError,
    InvalidArgument,
    InvalidIdentifier,
    InvalidTransition,
    JobExists,
    JobNotFound,
    JobStoreError,
    LeaseLost,
    MigrationRefused,
    MigrationStateLost,
    PayloadTooLarge,
    PluginError,
    RedisCommandError,
    EnqueueIncomplete,
    NotReplicated,
    StoreUnavailable,
    UnknownStrategy,
    UnsupportedServer,
)
from .hookspecs import hookimpl
from .job import Job, JobStatus
from .migration import Migration, open_migration
from .phases import Phase
from .plugins import StrategyInfo, strategies
from .schema import KeySchema
from .store import JobStore, open
from .strategy import Routing, Strategy

__version__ = "0.2.0"  # the one version source (pyproject.toml reads it)

__all__ = [
    "AuthenticationFailed",
    "Codec",
    "ConfigError",
    "CorruptRecord",
    "DeadLetter",
    "EvictionPolicyError",
    "InvalidArgument",
    "InvalidIdentifier",
    "InvalidTransition",
    "Job",
    "JobExists",
    "JobNotFound",
    "JobStatus",
    "JobStore",
    "JSONCodec",
    "JobStoreError",
    "KeySchema",
    "LeaseLost",
    "Migration",
    "MigrationRefused",
    "MigrationStateLost",
    "PayloadTooLarge",
    "Phase",
    "PluginError",
    "RedisCommandError",
    "Routing",
    "EnqueueIncomplete",
    "NotReplicated",
    "StoreUnavailable",
    "Strategy",
    "StrategyInfo",
    "UnknownStrategy",
    "UnsupportedServer",
    "hookimpl",
    "open",
    "open_migration",
    "strategies",
]
