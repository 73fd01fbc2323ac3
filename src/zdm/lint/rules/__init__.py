"""The SQL rules, one module each; every module has a docstring, BAD and GOOD examples and RULE.

Importing this package needs pglast (``zdm[lint]``).
"""

from __future__ import annotations

from zdm.lint.findings import Rule
from zdm.lint.rules import (
    add_column_not_null,
    add_column_rewrite,
    check_not_valid,
    cluster,
    column_type_rewrite,
    concurrently_in_transaction,
    concurrently_on_partitioned,
    detach_partition,
    domain_constraint,
    drop_column,
    drop_table,
    exclusion_constraint,
    exclusive_locks_in_transaction,
    foreign_key_not_valid,
    identifier_too_long,
    index_not_concurrent,
    lock_table,
    missing_lock_timeout,
    prefer_jsonb,
    refresh_materialized_view,
    rename_column,
    rename_table,
    set_not_null,
    set_tablespace,
    table_rewrite,
    truncate_cascade,
    unbatched_dml,
    uncommitted_transaction,
    unique_without_index,
    vacuum_full,
    validate_in_same_transaction,
    volatile_default,
)

RULES: tuple[Rule, ...] = tuple(
    module.RULE
    for module in (
        index_not_concurrent,
        concurrently_in_transaction,
        concurrently_on_partitioned,
        check_not_valid,
        foreign_key_not_valid,
        unique_without_index,
        set_not_null,
        add_column_not_null,
        volatile_default,
        add_column_rewrite,
        column_type_rewrite,
        rename_column,
        rename_table,
        drop_column,
        drop_table,
        vacuum_full,
        cluster,
        lock_table,
        set_tablespace,
        table_rewrite,
        refresh_materialized_view,
        domain_constraint,
        detach_partition,
        prefer_jsonb,
        exclusion_constraint,
        unbatched_dml,
        truncate_cascade,
        identifier_too_long,
        exclusive_locks_in_transaction,
        missing_lock_timeout,
        validate_in_same_transaction,
        uncommitted_transaction,
    )
)
"""Every SQL rule, in the order findings about one statement are reported."""

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
