"""PostgreSQL table lock modes as data: what each blocks, so policy can be derived from it."""

from __future__ import annotations

import enum


class LockMode(enum.IntEnum):
    """Table-level lock modes, ordered from weakest to strongest."""

    NONE = 0
    ACCESS_SHARE = 1
    ROW_SHARE = 2
    ROW_EXCLUSIVE = 3
    SHARE_UPDATE_EXCLUSIVE = 4
    SHARE = 5
    SHARE_ROW_EXCLUSIVE = 6
    EXCLUSIVE = 7
    ACCESS_EXCLUSIVE = 8

    @property
    def sql_name(self) -> str:
        return self.name.replace("_", " ")

    @classmethod
    def parse(cls, name: str) -> LockMode:
        return cls[name.strip().upper().replace(" ", "_")]

    @property
    def blocks_writes(self) -> bool:
        """Conflicts with ROW EXCLUSIVE, the lock every INSERT/UPDATE/DELETE takes."""
        return self >= LockMode.SHARE

    @property
    def blocks_reads(self) -> bool:
        """Conflicts with ACCESS SHARE, the lock every SELECT takes."""
        return self is LockMode.ACCESS_EXCLUSIVE

    @property
    def blocks_app(self) -> bool:
        """Whether application traffic queues behind this lock (so it needs a short lock_timeout)."""
        return self.blocks_writes

    @property
    def pg_names(self) -> tuple[str, ...]:
        """The names pg_locks.mode uses for the modes that conflict with this one."""
        return tuple(_PG_NAMES[m] for m in CONFLICTS[self])

    def describe_blocking(self) -> str:
        if self.blocks_reads:
            return "blocks reads and writes"
        if self.blocks_writes:
            return "blocks writes"
        if self is LockMode.NONE:
            return "takes no table lock"
        return "blocks no reads or writes"


_PG_NAMES = {
    LockMode.ACCESS_SHARE: "AccessShareLock",
    LockMode.ROW_SHARE: "RowShareLock",
    LockMode.ROW_EXCLUSIVE: "RowExclusiveLock",
    LockMode.SHARE_UPDATE_EXCLUSIVE: "ShareUpdateExclusiveLock",
    LockMode.SHARE: "ShareLock",
    LockMode.SHARE_ROW_EXCLUSIVE: "ShareRowExclusiveLock",
    LockMode.EXCLUSIVE: "ExclusiveLock",
    LockMode.ACCESS_EXCLUSIVE: "AccessExclusiveLock",
}

_L = LockMode
# The conflict table of the PostgreSQL manual ("Explicit Locking"), as data.
CONFLICTS: dict[LockMode, frozenset[LockMode]] = {
    _L.NONE: frozenset(),
    _L.ACCESS_SHARE: frozenset({_L.ACCESS_EXCLUSIVE}),
    _L.ROW_SHARE: frozenset({_L.EXCLUSIVE, _L.ACCESS_EXCLUSIVE}),
    _L.ROW_EXCLUSIVE: frozenset(
        {_L.SHARE, _L.SHARE_ROW_EXCLUSIVE, _L.EXCLUSIVE, _L.ACCESS_EXCLUSIVE}
    ),
    _L.SHARE_UPDATE_EXCLUSIVE: frozenset(
        {
            _L.SHARE_UPDATE_EXCLUSIVE,
            _L.SHARE,
            _L.SHARE_ROW_EXCLUSIVE,
            _L.EXCLUSIVE,
            _L.ACCESS_EXCLUSIVE,
        }
    ),
    _L.SHARE: frozenset(
        {
            _L.ROW_EXCLUSIVE,
            _L.SHARE_UPDATE_EXCLUSIVE,
            _L.SHARE_ROW_EXCLUSIVE,
            _L.EXCLUSIVE,
            _L.ACCESS_EXCLUSIVE,
        }
    ),
    _L.SHARE_ROW_EXCLUSIVE: frozenset(
        {
            _L.ROW_EXCLUSIVE,
            _L.SHARE_UPDATE_EXCLUSIVE,
            _L.SHARE,
            _L.SHARE_ROW_EXCLUSIVE,
            _L.EXCLUSIVE,
            _L.ACCESS_EXCLUSIVE,
        }
    ),
    _L.EXCLUSIVE: frozenset(
        {
            _L.ROW_SHARE,
            _L.ROW_EXCLUSIVE,
            _L.SHARE_UPDATE_EXCLUSIVE,
            _L.SHARE,
            _L.SHARE_ROW_EXCLUSIVE,
            _L.EXCLUSIVE,
            _L.ACCESS_EXCLUSIVE,
        }
    ),
    _L.ACCESS_EXCLUSIVE: frozenset(m for m in LockMode if m is not _L.NONE),
}
