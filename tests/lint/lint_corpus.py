"""A labelled corpus of migration files: dangerous or safe, and which zdm lint rules must fire.

Each case is one migration file. ``history`` is an earlier migration of the same project (for
type changes, where safety depends on the column's current type). Most files start with a
``SET lock_timeout`` so that a case tests one danger, not the missing timeout. Used by
tests/lint/test_lint_corpus.py and bench/lint_compare.py.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    name: str
    sql: str
    dangerous: bool
    rules: frozenset[str] = frozenset()
    history: str = ""


LT = "SET lock_timeout = '2s';\n"

USERS = (
    "CREATE TABLE users (id int PRIMARY KEY, email varchar(100), price numeric(10, 2),"
    " net cidr, seen timestamp, bio text);"
)


def bad(name: str, sql: str, *rules: str, history: str = "") -> Case:
    return Case(name, sql, True, frozenset(rules), history)


def good(name: str, sql: str, history: str = "") -> Case:
    return Case(name, sql, False, frozenset(), history)


CASES: tuple[Case, ...] = (
    # --- dangerous -------------------------------------------------------------------------
    bad(
        "create-index",
        LT + "CREATE INDEX users_email_idx ON users (email);",
        "index-not-concurrent",
    ),
    bad(
        "create-unique-index",
        LT + "CREATE UNIQUE INDEX users_lower_email ON users (lower(email));",
        "index-not-concurrent",
    ),
    bad("drop-index", LT + "DROP INDEX users_email_idx;", "index-not-concurrent"),
    bad("reindex", LT + "REINDEX TABLE users;", "index-not-concurrent"),
    bad(
        "concurrently-in-begin",
        "BEGIN;\nCREATE INDEX CONCURRENTLY users_email_idx ON users (email);\nCOMMIT;",
        "concurrently-in-transaction",
    ),
    bad(
        "concurrently-with-others",
        LT + "ALTER TABLE users ADD COLUMN nick text;\n"
        "CREATE INDEX CONCURRENTLY users_nick_idx ON users (nick);",
        "concurrently-in-transaction",
    ),
    bad(
        "check-valid",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_total_pos CHECK (total > 0);",
        "check-without-not-valid",
    ),
    bad(
        "inline-check",
        LT + "ALTER TABLE orders ADD COLUMN discount int CHECK (discount >= 0);",
        "check-without-not-valid",
    ),
    bad(
        "fk-valid",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES users (id);",
        "foreign-key-without-not-valid",
    ),
    bad(
        "inline-fk",
        LT + "ALTER TABLE orders ADD COLUMN coupon_id bigint REFERENCES coupons (id);",
        "foreign-key-without-not-valid",
    ),
    bad(
        "unique-constraint",
        LT + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE (email);",
        "unique-without-index",
    ),
    bad("primary-key", LT + "ALTER TABLE users ADD PRIMARY KEY (id);", "unique-without-index"),
    bad(
        "set-not-null",
        LT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
        "set-not-null-scan",
    ),
    bad(
        "not-null-no-default",
        LT + "ALTER TABLE users ADD COLUMN tenant_id bigint NOT NULL;",
        "add-column-not-null-no-default",
    ),
    bad(
        "uuid-default",
        LT + "ALTER TABLE users ADD COLUMN token uuid DEFAULT gen_random_uuid();",
        "volatile-default",
    ),
    bad(
        "random-default",
        LT + "ALTER TABLE users ADD COLUMN bucket float8 NOT NULL DEFAULT random();",
        "volatile-default",
    ),
    bad("bigserial", LT + "ALTER TABLE events ADD COLUMN seq bigserial;", "add-column-rewrite"),
    bad(
        "identity",
        LT + "ALTER TABLE events ADD COLUMN n bigint GENERATED ALWAYS AS IDENTITY;",
        "add-column-rewrite",
    ),
    bad(
        "stored-generated",
        LT + "ALTER TABLE lines ADD COLUMN total numeric GENERATED ALWAYS AS (qty * price) STORED;",
        "add-column-rewrite",
    ),
    bad(
        "int-to-bigint",
        LT + "ALTER TABLE users ALTER COLUMN id TYPE bigint;",
        "column-type-rewrite",
        history=USERS,
    ),
    bad(
        "varchar-shorter",
        LT + "ALTER TABLE users ALTER COLUMN email TYPE varchar(50);",
        "column-type-rewrite",
        history=USERS,
    ),
    bad(
        "timestamp-to-timestamptz",
        LT + "ALTER TABLE users ALTER COLUMN seen TYPE timestamptz;",
        "column-type-rewrite",
        history=USERS,
    ),
    bad(
        "type-using",
        LT + "ALTER TABLE users ALTER COLUMN bio TYPE varchar(500) USING left(bio, 500);",
        "column-type-rewrite",
        history=USERS,
    ),
    bad(
        "rename-column",
        LT + "ALTER TABLE users RENAME COLUMN email TO email_address;",
        "rename-column",
    ),
    bad("rename-table", LT + "ALTER TABLE users RENAME TO accounts;", "rename-table"),
    bad("drop-column", LT + "ALTER TABLE users DROP COLUMN legacy;", "drop-column"),
    bad("drop-table", LT + "DROP TABLE sessions;", "drop-table"),
    bad("vacuum-full", LT + "VACUUM FULL users;", "vacuum-full"),
    bad("cluster", LT + "CLUSTER users USING users_pkey;", "cluster"),
    bad(
        "lock-table",
        LT + "BEGIN;\nLOCK TABLE users IN ACCESS EXCLUSIVE MODE;\nCOMMIT;",
        "lock-table",
    ),
    bad(
        "set-tablespace",
        LT + "ALTER TABLE events SET TABLESPACE archive;",
        "set-tablespace",
    ),
    bad("set-logged", LT + "ALTER TABLE events SET LOGGED;", "table-rewrite"),
    bad(
        "domain-check",
        LT + "ALTER DOMAIN positive_amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0);",
        "domain-constraint-scan",
    ),
    bad(
        "detach-partition",
        LT + "ALTER TABLE events DETACH PARTITION events_2019;",
        "detach-partition-not-concurrent",
    ),
    bad("set-access-method", LT + "ALTER TABLE events SET ACCESS METHOD heap;", "table-rewrite"),
    bad(
        "refresh-matview",
        LT + "REFRESH MATERIALIZED VIEW daily_totals;",
        "refresh-materialized-view",
    ),
    bad("json", "CREATE TABLE hooks (id bigint PRIMARY KEY, payload json);", "prefer-jsonb"),
    bad(
        "exclusion",
        LT + "ALTER TABLE bookings ADD CONSTRAINT no_overlap "
        "EXCLUDE USING gist (room WITH =, during WITH &&);",
        "exclusion-constraint",
    ),
    bad("update-all", "UPDATE users SET active = true;", "unbatched-dml"),
    bad("delete-all", "DELETE FROM sessions;", "unbatched-dml"),
    bad("truncate-cascade", LT + "TRUNCATE users CASCADE;", "truncate-cascade"),
    bad(
        "long-name",
        "CREATE TABLE customer_subscription_renewal_reminder_notification_delivery_attempts "
        "(id bigint PRIMARY KEY);",
        "identifier-too-long",
    ),
    bad(
        "two-tables",
        LT + "BEGIN;\nALTER TABLE orders ADD COLUMN note text;\n"
        "ALTER TABLE users ADD COLUMN note text;\nCOMMIT;",
        "exclusive-locks-in-transaction",
    ),
    bad(
        "no-lock-timeout",
        "ALTER TABLE users ADD COLUMN nickname text;",
        "missing-lock-timeout",
    ),
    bad(
        "no-lock-timeout-trigger",
        "CREATE TRIGGER users_audit AFTER UPDATE ON users FOR EACH ROW EXECUTE FUNCTION audit();",
        "missing-lock-timeout",
    ),
    bad(
        "validate-same-txn",
        LT + "BEGIN;\n"
        "ALTER TABLE orders ADD CONSTRAINT orders_total_pos CHECK (total > 0) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_pos;\nCOMMIT;",
        "validate-in-same-transaction",
    ),
    bad(
        "validate-same-file",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES users (id) NOT VALID;\n"
        "ALTER TABLE orders VALIDATE CONSTRAINT orders_user_fk;",
        "validate-in-same-transaction",
    ),
    # --- safe ------------------------------------------------------------------------------
    good(
        "create-index-concurrently", "CREATE INDEX CONCURRENTLY users_email_idx ON users (email);"
    ),
    good("drop-index-concurrently", "DROP INDEX CONCURRENTLY IF EXISTS users_email_idx;"),
    good("reindex-concurrently", "REINDEX INDEX CONCURRENTLY users_email_idx;"),
    good("add-nullable-column", LT + "ALTER TABLE users ADD COLUMN nickname text;"),
    good(
        "add-column-now",
        LT + "ALTER TABLE users ADD COLUMN created_at timestamptz NOT NULL DEFAULT now();",
    ),
    good(
        "add-column-constant",
        LT + "ALTER TABLE users ADD COLUMN active boolean NOT NULL DEFAULT true;",
    ),
    good(
        "check-not-valid",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_total_pos CHECK (total > 0) NOT VALID;",
    ),
    good("validate", "ALTER TABLE orders VALIDATE CONSTRAINT orders_total_pos;"),
    good(
        "fk-not-valid",
        LT + "ALTER TABLE orders ADD CONSTRAINT orders_user_fk FOREIGN KEY (user_id) "
        "REFERENCES users (id) NOT VALID;",
    ),
    good(
        "unique-using-index",
        LT + "ALTER TABLE users ADD CONSTRAINT users_email_key UNIQUE USING INDEX users_email_key;",
    ),
    good(
        "varchar-longer",
        LT + "ALTER TABLE users ALTER COLUMN email TYPE varchar(200);",
        history=USERS,
    ),
    good("varchar-to-text", LT + "ALTER TABLE users ALTER COLUMN email TYPE text;", history=USERS),
    good(
        "numeric-wider",
        LT + "ALTER TABLE users ALTER COLUMN price TYPE numeric(12, 2);",
        history=USERS,
    ),
    good("cidr-to-inet", LT + "ALTER TABLE users ALTER COLUMN net TYPE inet;", history=USERS),
    good(
        "timestamptz-in-utc",
        LT + "SET timezone = 'UTC';\nALTER TABLE users ALTER COLUMN seen TYPE timestamptz;",
        history=USERS,
    ),
    good(
        "new-table",
        "CREATE TABLE events (id bigint PRIMARY KEY, payload jsonb);\n"
        "CREATE INDEX events_payload_idx ON events USING gin (payload);\n"
        "ALTER TABLE events ADD COLUMN kind text NOT NULL;\n"
        "ALTER TABLE events ADD CONSTRAINT events_kind_check CHECK (kind <> '');",
    ),
    good("update-batch", "UPDATE users SET active = true WHERE id BETWEEN 1 AND 10000;"),
    good(
        "set-not-null-proven",
        LT + "ALTER TABLE users ALTER COLUMN email SET NOT NULL;",
        history=USERS
        + "\nALTER TABLE users ADD CONSTRAINT users_email_nn CHECK (email IS NOT NULL) NOT VALID;"
        "\nCOMMIT;\nALTER TABLE users VALIDATE CONSTRAINT users_email_nn;",
    ),
    good("vacuum", "VACUUM (ANALYZE) users;"),
    good("set-default", LT + "ALTER TABLE users ALTER COLUMN bio SET DEFAULT '';"),
    good("insert-rows", "INSERT INTO settings (key, value) VALUES ('theme', 'dark');"),
    good("drop-trigger", LT + "DROP TRIGGER IF EXISTS users_audit ON users;"),
    good(
        "new-table-fk",
        LT + "CREATE TABLE payments (id bigint PRIMARY KEY, user_id bigint REFERENCES users (id));",
    ),
    good(
        "local-timeout",
        "BEGIN;\nSET LOCAL lock_timeout = '1s';\n"
        "ALTER TABLE users ALTER COLUMN bio DROP DEFAULT;\nCOMMIT;",
    ),
    good(
        "detach-concurrently", LT + "ALTER TABLE events DETACH PARTITION events_2019 CONCURRENTLY;"
    ),
    good(
        "domain-check-not-valid",
        LT + "ALTER DOMAIN positive_amount ADD CONSTRAINT amount_positive CHECK (VALUE > 0)"
        " NOT VALID;",
    ),
    good("refresh-concurrently", LT + "REFRESH MATERIALIZED VIEW CONCURRENTLY daily_totals;"),
)
