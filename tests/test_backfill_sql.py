"""Unit tests of the backfill's SQL, batch sizing and step merging: no database needed."""

from __future__ import annotations

from psycopg import sql

from zdm.ddl import BackfillJob, BackfillSource, Table
from zdm.engine.backfill import BatchSizer, throttle_lines
from zdm.engine.backfill.catalog import ctid_unsupported
from zdm.engine.backfill.key import CTID, Key
from zdm.engine.backfill.mapping import remaining_sql
from zdm.engine.backfill.merging import merge_conflict
from zdm.engine.backfill.statements import (
    batch_and_checkpoint_sql,
    batch_sql,
    ctid_batch_sql,
    split_sql,
    timeouts_sql,
    upper_bound_sql,
)
from zdm.engine.progress import RateWindow, Snapshot
from zdm.plan import Backfill
from zdm.stats import percentile

USERS = Table("public", "users")
PHONE = "regexp_replace(contact->>'phone', '[^0-9+]', '', 'g')"
ID = Key(("id",))
AB = Key(("a", "b"))


def text(q: sql.Composable) -> str:
    return q.as_string(None)


def job(
    set_: dict[str, str] | None = None, where: str | None = None, **options: object
) -> BackfillJob:
    spec = Backfill.model_validate({"table": "users", **options})
    return BackfillJob(USERS, set_ or {"phone": PHONE}, where, spec)


# -- statements ---------------------------------------------------------------------------------


def test_upper_bound_first_batch_of_the_only_worker() -> None:
    assert text(upper_bound_sql(USERS, ID, lower=False, upper=False)) == (
        'SELECT "s"."id"::text, count(*) OVER () FROM (SELECT "id" FROM "public"."users"'
        ' ORDER BY "id" LIMIT %s) s ORDER BY "s"."id" DESC LIMIT 1'
    )


def test_upper_bound_of_an_integer_key_is_an_aggregate() -> None:
    key = Key(("id",), max_aggregate=True)
    assert text(upper_bound_sql(USERS, key, lower=True, upper=False)) == (
        'SELECT max("id")::text, count(*) FROM (SELECT "id" FROM "public"."users"'
        ' WHERE ("id") > (%s) ORDER BY "id" LIMIT %s) s HAVING count(*) > 0'
    )


def test_upper_bound_of_a_worker_range_with_a_composite_key() -> None:
    assert text(upper_bound_sql(USERS, AB, lower=True, upper=True)) == (
        'SELECT "s"."a"::text, "s"."b"::text, count(*) OVER () FROM (SELECT "a", "b" FROM'
        ' "public"."users" WHERE ("a", "b") > (%s, %s) AND ("a", "b") <= (%s, %s)'
        ' ORDER BY "a", "b" LIMIT %s) s ORDER BY "s"."a" DESC, "s"."b" DESC LIMIT 1'
    )


def test_batch_is_bounded_by_a_key_range_and_the_predicate() -> None:
    assert text(batch_sql([job()], ID, lower=True)) == (
        f'UPDATE "public"."users" SET "phone" = ({PHONE})'
        ' WHERE ("id") > (%s) AND ("id") <= (%s)'
        f' AND ("phone" IS NULL OR "phone" IS DISTINCT FROM ({PHONE}))'
    )
    # The proof keeps the exact predicate: a row whose expression is NULL is done.
    assert text(remaining_sql([job()])) == (
        f'SELECT count(*) FROM "public"."users" WHERE ("phone" IS DISTINCT FROM ({PHONE}))'
    )


def test_first_batch_has_no_lower_bound() -> None:
    assert text(batch_sql([job(where="phone IS NULL")], AB, lower=False)) == (
        f'UPDATE "public"."users" SET "phone" = ({PHONE})'
        ' WHERE ("a", "b") <= (%s, %s) AND (phone IS NULL)'
    )


def test_cross_table_batch_qualifies_the_key_and_joins() -> None:
    j = BackfillJob(
        USERS,
        {"plan": "accounts.plan"},
        None,
        Backfill(table="users"),
        BackfillSource(Table("billing", "accounts"), "accounts.user_id = users.id"),
    )
    assert text(batch_sql([j], ID, lower=True)) == (
        'UPDATE "public"."users" SET "plan" = (accounts.plan) FROM "billing"."accounts"'
        ' WHERE (accounts.user_id = users.id) AND ("public"."users"."id") > (%s)'
        ' AND ("public"."users"."id") <= (%s)'
        ' AND ("public"."users"."plan" IS NULL'
        ' OR "public"."users"."plan" IS DISTINCT FROM (accounts.plan))'
    )
    assert text(remaining_sql([j])) == (
        'SELECT count(*) FROM "public"."users", "billing"."accounts"'
        " WHERE (accounts.user_id = users.id)"
        ' AND ("public"."users"."plan" IS DISTINCT FROM (accounts.plan))'
    )


def test_ctid_batch_is_a_page_range() -> None:
    assert text(ctid_batch_sql([job(where="phone IS NULL")])) == (
        f'WITH zdm_batch AS (UPDATE "public"."users" SET "phone" = ({PHONE})'
        ' WHERE "public"."users"."ctid" >= %s::tid AND "public"."users"."ctid" < %s::tid'
        " AND (phone IS NULL) RETURNING 1)"
        ' SELECT (SELECT count(*) FROM "public"."users" WHERE "public"."users"."ctid" >= %s::tid'
        ' AND "public"."users"."ctid" < %s::tid), (SELECT count(*) FROM zdm_batch)'
    )


def test_merged_jobs_update_each_column_only_where_its_predicate_holds() -> None:
    jobs = [job(), job({"email_domain": "split_part(email, '@', 2)"}, "email_domain IS NULL")]
    assert text(batch_sql(jobs, ID, lower=True)) == (
        'UPDATE "public"."users" SET "phone" = CASE WHEN'
        f' ("phone" IS NULL OR "phone" IS DISTINCT FROM ({PHONE}))'
        f' THEN ({PHONE}) ELSE "phone" END, "email_domain" = CASE WHEN (email_domain IS NULL)'
        " THEN (split_part(email, '@', 2)) ELSE \"email_domain\" END"
        ' WHERE ("id") > (%s) AND ("id") <= (%s)'
        f' AND (("phone" IS NULL OR "phone" IS DISTINCT FROM ({PHONE})) OR (email_domain IS NULL))'
    )
    assert text(remaining_sql(jobs)) == (
        'SELECT count(*) FROM "public"."users" WHERE'
        f' (("phone" IS DISTINCT FROM ({PHONE})) OR (email_domain IS NULL))'
    )


def test_split_samples_keys_and_keeps_the_last_of_each_slice() -> None:
    assert text(split_sql(USERS, AB, 3, 12.5)) == (
        'SELECT "s"."a"::text, "s"."b"::text FROM (SELECT DISTINCT ON (s.zdm_slice) s.* FROM'
        ' (SELECT "a", "b", ntile(3) OVER (ORDER BY "a", "b") AS zdm_slice FROM "public"."users"'
        ' TABLESAMPLE SYSTEM (12.5)) s ORDER BY s.zdm_slice, "s"."a" DESC, "s"."b" DESC) s'
        " WHERE s.zdm_slice < 3 ORDER BY s.zdm_slice"
    )
    assert "TABLESAMPLE" not in text(split_sql(USERS, AB, 3, 100))


def test_a_batch_is_one_statement_its_range_its_update_and_its_checkpoint() -> None:
    key = Key(("id",), max_aggregate=True)
    query = batch_and_checkpoint_sql(
        [job({"phone": "lower(x)"})],
        key,
        sql.Identifier("zdm", "backfills"),
        lower=True,
        upper=False,
    )
    assert text(query) == (
        'WITH zdm_range AS (SELECT max("id") AS "id", count(*) AS zdm_rows FROM (SELECT "id"'
        ' FROM "public"."users" WHERE ("id") > (%s) ORDER BY "id" LIMIT %s) s'
        " HAVING count(*) > 0),"
        ' zdm_batch AS (UPDATE "public"."users" SET "phone" = (lower(x))'
        ' WHERE ("id") > (%s) AND ("id") <= ((SELECT "id" FROM zdm_range))'
        ' AND ("phone" IS NULL OR "phone" IS DISTINCT FROM (lower(x))) RETURNING 1),'
        ' zdm_checkpoint AS (UPDATE "zdm"."backfills"'
        ' SET last_key = (SELECT to_jsonb(ARRAY["id"::text]) FROM zdm_range),'
        " rows_done = rows_done + (SELECT zdm_rows FROM zdm_range),"
        " rows_updated = rows_updated + (SELECT count(*) FROM zdm_batch), batch_size = %s,"
        " batches = batches + 1, rate = %s, updated_at = clock_timestamp()"
        " WHERE run_id = %s AND ordinal = ANY(%s) AND worker = %s AND part = %s"
        " AND EXISTS (SELECT FROM zdm_range))"
        ' SELECT "id"::text, zdm_rows, (SELECT count(*) FROM zdm_batch),'
        " mod(txid_current(), 4294967296) FROM zdm_range"
    )
    # The batch's range is the upper bound's: the same conditions, the key under its own type.
    bound = text(upper_bound_sql(USERS, key, lower=True, upper=False))
    assert bound.replace(
        'max("id")::text, count(*)', 'max("id") AS "id", count(*) AS zdm_rows'
    ) in (text(query))


def test_batch_transaction_sets_its_timeouts_and_does_not_wait_for_the_flush() -> None:
    assert text(timeouts_sql(200, 1000)) == (
        "SET LOCAL lock_timeout = '200ms'; SET LOCAL statement_timeout = '1000ms';"
        ' SET LOCAL synchronous_commit = off; SET LOCAL "zdm"."writer" = \'backfill\''
    )


def test_ctid_walk_needs_tid_range_scans() -> None:
    assert CTID.ctid and CTID.describe() == "ctid page ranges"
    assert ctid_unsupported(140000) is None
    assert "PostgreSQL 14" in (ctid_unsupported(130012) or "")


# -- batch sizing -------------------------------------------------------------------------------


def sizer(**options: object) -> BatchSizer:
    return BatchSizer.of(Backfill.model_validate({"table": "t", **options}))


def test_auto_batches_grow_at_most_one_and_a_half_times() -> None:
    s = sizer(batch_time="200ms")
    assert s.size == 1000
    s.after(1000, 10)  # 20x under target
    assert s.size == 1500
    s.after(1500, 10)
    assert s.size == 2250


def test_auto_batches_shrink_in_proportion_at_once() -> None:
    s = sizer(batch_time="200ms")
    s.after(1000, 800)  # 4x over target
    assert s.size == 250
    s.after(250, 190)  # close to target: stays close
    assert s.size == 256


def test_one_fast_batch_does_not_double_the_next() -> None:
    s = sizer(batch_time="200ms")
    s.after(1000, 200)  # on target
    assert s.size == 1000
    s.after(1000, 50)  # a lucky batch: the cost estimate only halves toward it
    assert s.size == 1500  # (1600 by the estimate, capped at 1.5x)
    s.after(1500, 150)  # 0.1ms a row: the estimate goes half way, to 0.1125ms
    assert s.size == 1777  # not the 2000 this one batch alone would suggest
    s.after(1777, 400)  # slow: the estimate jumps to the slow batch's cost at once
    assert s.size == 888


def test_auto_batches_stay_within_min_and_max() -> None:
    s = sizer(batch_time="100ms", min_batch=400, max_batch=1200)
    s.after(1000, 10_000)
    assert s.size == 400
    for _ in range(10):
        s.after(s.size, 1)
    assert s.size == 1200


def test_a_short_last_batch_does_not_grow_the_size() -> None:
    s = sizer(batch_time="200ms")
    s.after(10, 1)  # the end of a range: 10 rows of 1000
    assert s.size == 1000
    s.after(10, 500)  # ...but a slow one still shrinks it (down to min_batch)
    assert s.size == 100


def test_statement_timeout_halves_down_to_the_minimum() -> None:
    s = sizer(batch_time="200ms", min_batch=300)
    assert s.statement_timeout_ms == 1000
    assert s.halve() and s.size == 500
    assert s.halve() and s.size == 300
    assert not s.halve()
    assert sizer(batch_time="1s").statement_timeout_ms == 5000


def test_a_fixed_batch_size_never_changes_and_never_times_out() -> None:
    s = sizer(batch_size=5000)
    s.after(5000, 100_000)
    assert s.size == 5000
    assert s.statement_timeout_ms == 0
    assert not s.halve()


def test_resumed_auto_size_starts_where_the_last_run_was() -> None:
    spec = Backfill(table="t")
    assert BatchSizer.of(spec, 7777).size == 7777
    assert BatchSizer.of(Backfill(table="t", batch_size=10), 7777).size == 10


# -- merging backfills of one table --------------------------------------------------------------


def test_independent_backfills_of_one_table_merge() -> None:
    a = job({"phone": PHONE})
    b = job({"domain": "split_part(email, '@', 2)"})
    assert merge_conflict([a], b) is None


def test_a_backfill_reading_an_earlier_ones_column_walks_alone() -> None:
    a = job({"phone": PHONE})
    b = job({"phone_ok": "phone ~ '^[0-9]+$'"})
    assert merge_conflict([a], b) == "reads phone, which an earlier backfill sets"
    c = job({"x": "1"}, where='"phone" IS NULL')
    assert merge_conflict([a], c) == "reads phone, which an earlier backfill sets"
    assert merge_conflict([a], job({"phone": "'x'"})) == "sets phone again"


def test_backfills_with_other_options_or_tables_walk_alone() -> None:
    a = job({"phone": PHONE})
    assert merge_conflict([a], job({"x": "1"}, workers=2)) == "different batch or throttle options"
    other = BackfillJob(Table("public", "orders"), {"x": "1"}, None, Backfill(table="orders"))
    assert merge_conflict([a], other) == "another table"
    src = BackfillJob(
        USERS, {"x": "a.x"}, None, Backfill(table="users"), BackfillSource(USERS, "true")
    )
    assert merge_conflict([a], src) == "a cross-table backfill (from) walks alone"


# -- odds and ends ---------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([3.0], 99) == 3


def test_rate_window_counts_pauses() -> None:
    w = RateWindow(window_s=10)
    w.add(0, now=0.0)
    w.add(1000, now=1.0)
    assert w.rate(now=1.0) == 1000
    assert w.rate(now=2.0) == 500  # a second without progress halves it


def test_eta_from_rate() -> None:
    snap = Snapshot("t", 100, 1100, 50.0, 10, 1, 3, None)
    assert snap.eta_s == 20
    assert Snapshot("t", 100, 1100, 0.0, 10, 1, 3, None).eta_s is None


def test_throttles_in_words() -> None:
    spec = Backfill.model_validate(
        {
            "table": "t",
            "pause": "10ms",
            "max_replica_lag": "2s",
            "throttle_query": "SELECT false",
            "pause_on_autovacuum": True,
        }
    )
    assert throttle_lines(spec) == [
        "pause 10ms between batches",
        "waits while a standby's replay lags over 2000ms",
        "waits while the throttle_query returns true: SELECT false",
        "waits while a vacuum works on the table",
        "`zdm pause` holds it after the current batch; SIGINT/SIGTERM stop it there",
    ]
