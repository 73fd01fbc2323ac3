"""Statements, lock modes and catalog probes: the vocabulary shared by operations and the engine."""

from zdm.ddl.locks import LockMode
from zdm.ddl.statement import (
    Action,
    BackfillJob,
    BackfillSource,
    Check,
    Query,
    Statement,
    Table,
    Txn,
    Wait,
    drop_if_exists,
    user_sql,
)

__all__ = [
    "Action",
    "BackfillJob",
    "BackfillSource",
    "Check",
    "LockMode",
    "Query",
    "Statement",
    "Table",
    "Txn",
    "Wait",
    "drop_if_exists",
    "user_sql",
]
