"""zdm behind a real PgBouncer (issue 18): transaction pooling is detected and refused before
anything changes, session pooling works like a direct connection, and no setting of zdm's reaches
a later client of the pool. Also the run's lease: a runner that no longer owns its run stops.

PgBouncer comes from Debian's package (.ci/run installs it); without it these tests skip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from pgbouncer_support import PgBouncer, fresh_client_settings, pgbouncer_binary
from psycopg.conninfo import make_conninfo
from zdm_helpers import (
    ADD_PHONE,
    output_of,
    run_row,
    scalar,
    seed,
    start_zdm,
    wait_for,
    write_plan,
    zdm,
)

from zdm.engine.pooling import (
    DIRECT,
    SESSION,
    TRANSACTION,
    PoolerRefused,
    keep_client_check,
    pooling,
    release,
)
from zdm.engine.session import CLIENT_CHECK, connect
from zdm.state.lease import Lease, new_token

ROWS = 300
GATE = 7018
# What a later client of the pool must see exactly as the server's defaults.
SETTINGS = (CLIENT_CHECK, "lock_timeout", "statement_timeout", "search_path")

needs_pgbouncer = pytest.mark.skipif(
    pgbouncer_binary() is None,
    reason="pgbouncer is not installed (apt-get install -y pgbouncer; .ci/run installs it)",
)

Bouncer = Callable[..., PgBouncer]


@pytest.fixture
def bouncer(pg_admin_dsn: str) -> Iterator[Bouncer]:
    """Starts PgBouncers in front of the test server; all are stopped after the test."""
    started: list[PgBouncer] = []

    def start(**options: Any) -> PgBouncer:
        try:
            pb = PgBouncer(pg_admin_dsn, **options).start()
        except RuntimeError as e:
            pytest.skip(f"pgbouncer cannot run here: {e}")
        started.append(pb)
        return pb

    yield start
    for pb in started:
        pb.stop()


@pytest.fixture
def seeded(dsn: str) -> str:
    seed(dsn, ROWS)
    return dsn


@pytest.fixture
def watcher(seeded: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(seeded, autocommit=True) as conn:
        yield conn


def gated_plan(tmp_path: Path, name: str = "pooled", gates: tuple[str, ...] = ()) -> Path:
    """Waits at its first step for advisory lock GATE, then builds an index concurrently (a
    session-level unit) and adds a column."""
    plan = {
        "version": 1,
        "name": name,
        "gates": list(gates),
        "phases": {
            "additive": [
                {
                    "sql": {
                        "up": f"SELECT pg_advisory_xact_lock_shared({GATE})",
                        "lock": "ACCESS SHARE",
                    }
                },
                {"create_index": {"table": "users", "name": "idx_users_name", "columns": ["name"]}},
                {"add_column": {"table": "users", "column": {"name": "phone", "type": "text"}}},
            ]
        },
    }
    return write_plan(tmp_path / f"{name}.yaml", plan)


@contextmanager
def closed_gate(dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A session holding advisory lock GATE: a `gated_plan` waits at its first step until the
    test calls `open_gate` (or the block ends)."""
    with psycopg.connect(dsn, autocommit=True) as gate:
        gate.execute("SELECT pg_advisory_lock(%s)", [GATE])
        yield gate


def open_gate(gate: psycopg.Connection[Any]) -> None:
    gate.execute("SELECT pg_advisory_unlock(%s)", [GATE])


def assert_completed_once(watcher: psycopg.Connection[Any]) -> None:
    """One run of the gated plan, completed, its index built and valid."""
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    assert run_row(watcher, "pooled")["status"] == "completed"
    assert scalar(
        watcher, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_name'::regclass"
    )


def gate_waiters(watcher: psycopg.Connection[Any]) -> int:
    return int(
        scalar(
            watcher,
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = %s"
            " AND NOT granted",
            [GATE],
        )
    )


def defaults(dsn: str) -> dict[str, str | None]:
    """The server's defaults, as a brand-new direct client sees them."""
    return fresh_client_settings(dsn, SETTINGS)[0]


def no_leak(pb: PgBouncer, dsn: str) -> None:
    """Every server connection of the pool shows a new client the server's defaults."""
    expected = defaults(dsn)
    seen = fresh_client_settings(
        pb.dsn(dsn), SETTINGS, clients=pb.pool_size, hold=pb.mode != "statement"
    )
    assert seen == [expected] * pb.pool_size


def untouched(watcher: psycopg.Connection[Any]) -> None:
    """Nothing of zdm's in the database: no state schema, no index, no column."""
    assert scalar(watcher, "SELECT to_regnamespace('zdm')") is None
    assert scalar(watcher, "SELECT to_regclass('idx_users_name')") is None
    assert (
        scalar(
            watcher,
            "SELECT count(*) FROM pg_attribute WHERE attrelid = 'users'::regclass AND attname = 'phone'",
        )
        == 0
    )


# -- detection ------------------------------------------------------------------------------


@needs_pgbouncer
@pytest.mark.parametrize(
    ("mode", "pool_size", "expected"),
    [
        ("transaction", 1, TRANSACTION),
        ("transaction", 3, TRANSACTION),
        ("statement", 2, TRANSACTION),
        ("session", 3, SESSION),
    ],
)
def test_the_pooling_mode_is_detected(
    dsn: str, bouncer: Bouncer, mode: str, pool_size: int, expected: str
) -> None:
    pb = bouncer(mode=mode, pool_size=pool_size)
    pooled = pb.dsn(dsn)
    with connect(pooled, "test") as conn:
        assert pooling(conn, pooled) == expected
    no_leak(pb, dsn)


def test_a_direct_connection_is_direct_and_checks_its_client(dsn: str, server_version: int) -> None:
    with connect(dsn, "test") as conn:
        assert pooling(conn, dsn) in (DIRECT, SESSION)  # a unix socket cannot tell: probed
        if server_version >= 140000:
            # Carried by the startup packet: a killed zdm's statements still stop.
            assert scalar(conn, "SELECT current_setting(%s)", [CLIENT_CHECK]) == "2s"


def test_startup_options_of_the_dsn_are_kept_beside_the_client_check(
    dsn: str, server_version: int
) -> None:
    with connect(make_conninfo(dsn, options="-c statement_timeout=7s"), "test") as conn:
        assert scalar(conn, "SELECT current_setting('statement_timeout')") == "7s"
        if server_version >= 140000:
            assert scalar(conn, "SELECT current_setting(%s)", [CLIENT_CHECK]) == "2s"


@needs_pgbouncer
def test_a_session_pool_with_no_second_server_connection_is_refused(
    dsn: str, bouncer: Bouncer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("zdm.engine.pooling.SECOND_SESSION_WAIT_S", 0.5)
    pb = bouncer(mode="session", pool_size=1)
    pooled = pb.dsn(dsn)
    with connect(pooled, "test") as conn, pytest.raises(PoolerRefused, match="no server session"):
        pooling(conn, pooled)


# -- transaction pooling: refused before anything changes ----------------------------------


@needs_pgbouncer
@pytest.mark.parametrize(
    ("pool_size", "ignore"),
    [(1, "extra_float_digits"), (3, "extra_float_digits,options")],
    ids=["pool-1-options-refused", "pool-3-options-dropped"],
)
def test_two_runners_through_transaction_pooling_both_refuse_and_change_nothing(
    seeded: str,
    watcher: psycopg.Connection[Any],
    bouncer: Bouncer,
    tmp_path: Path,
    pool_size: int,
    ignore: str,
) -> None:
    pb = bouncer(mode="transaction", pool_size=pool_size, ignore_startup_parameters=ignore)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path)
    before = scalar(watcher, "SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u")
    runners = [start_zdm("run", plan, "--dsn", pooled) for _ in range(2)]
    for runner in runners:
        done = runner.wait()
        assert done.returncode == 2, output_of(done)
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, output_of(done)
        assert "transaction pooling" in lines[0] and "--dsn" in lines[0]
        assert "session pooling" in lines[0] and "Traceback" not in done.stderr
    untouched(watcher)
    after = scalar(watcher, "SELECT md5(string_agg(u::text, ',' ORDER BY id)) FROM users u")
    assert after == before
    no_leak(pb, seeded)


@needs_pgbouncer
def test_rollback_and_migrate_through_transaction_pooling_refuse(
    seeded: str, watcher: psycopg.Connection[Any], bouncer: Bouncer, tmp_path: Path
) -> None:
    pb = bouncer(mode="transaction", pool_size=2)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path)
    rollback = zdm("rollback", plan, "--dsn", pooled)
    assert rollback.returncode == 2 and "transaction pooling" in rollback.stderr, output_of(
        rollback
    )
    migrations = tmp_path / "migrations"
    migrations.mkdir()
    (migrations / "V001__phone.yaml").write_text(ADD_PHONE.read_text())
    migrate = zdm("migrate", migrations, "--dsn", pooled)
    assert migrate.returncode == 2 and "zdm migrate refuses" in migrate.stderr, output_of(migrate)
    untouched(watcher)
    no_leak(pb, seeded)


@needs_pgbouncer
def test_read_only_commands_work_through_transaction_pooling_and_leak_nothing(
    seeded: str, bouncer: Bouncer, tmp_path: Path
) -> None:
    # PgBouncer rejects the startup `options` zdm sends: zdm connects without them.
    pb = bouncer(mode="transaction", pool_size=1)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path, gates=("additive",))
    direct = zdm("run", plan, "--dsn", seeded)  # the run, directly, as the README says
    assert direct.returncode == 0 and "waiting at the gate" in direct.stderr, output_of(direct)
    for args in (
        ("status", "--dsn", pooled),
        ("status", "pooled", "--json", "--dsn", pooled),
        ("report", "pooled", "--dsn", pooled),
        ("history", "--dsn", pooled),
        ("pause", "pooled", "--dsn", pooled),
        ("resume", "pooled", "--dsn", pooled),
        ("run", plan, "--dry-run", "--dsn", pooled),
        ("rollback", plan, "--dry-run", "--dsn", pooled),
        ("validate", plan, "--dsn", pooled),
    ):
        done = zdm(*args)
        assert done.returncode == 0, output_of(done)
    status = zdm("status", "pooled", "--dsn", pooled)
    assert "waiting" in status.stdout, output_of(status)
    no_leak(pb, seeded)


@needs_pgbouncer
def test_a_pooled_runner_next_to_a_direct_one_refuses_and_leaves_the_run_alone(
    seeded: str, watcher: psycopg.Connection[Any], bouncer: Bouncer, tmp_path: Path
) -> None:
    """The application's pool address given to a second job while zdm runs directly."""
    pb = bouncer(mode="transaction", pool_size=1)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path)
    with closed_gate(seeded) as gate:
        first = start_zdm("run", plan, "--dsn", seeded)
        wait_for(lambda: gate_waiters(watcher), 60, "zdm at the gate", alive=first)
        second = zdm("run", plan, "--dsn", pooled)
        assert second.returncode == 2 and "transaction pooling" in second.stderr, output_of(second)
        open_gate(gate)
        done = first.wait()
    assert done.returncode == 0, output_of(done)
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    assert run_row(watcher, "pooled")["status"] == "completed"
    no_leak(pb, seeded)


@needs_pgbouncer
def test_a_pinned_pooled_session_gets_the_client_check_and_gives_it_back(
    dsn: str, bouncer: Bouncer, server_version: int
) -> None:
    if server_version < 140000:
        pytest.skip("client_connection_check_interval is PostgreSQL 14+")
    pb = bouncer(
        mode="session",
        pool_size=1,
        ignore_startup_parameters="extra_float_digits,options",
        server_reset_query="",
    )
    pooled = pb.dsn(dsn)
    conn = connect(pooled, "test")
    assert scalar(conn, "SELECT current_setting(%s)", [CLIENT_CHECK]) == "0"  # dropped
    assert keep_client_check(conn)
    assert scalar(conn, "SELECT current_setting(%s)", [CLIENT_CHECK]) == "2s"
    release(conn, reset_client_check=True)
    no_leak(pb, dsn)  # the same server session, no reset query


# -- session pooling: the control ----------------------------------------------------------


@needs_pgbouncer
@pytest.mark.parametrize(
    "config",
    [
        {},  # PgBouncer refuses the startup `options`; its DISCARD ALL resets sessions
        {"ignore_startup_parameters": "extra_float_digits,options", "server_reset_query": ""},
    ],
    ids=["options-refused", "options-dropped-no-reset-query"],
)
def test_session_pooling_second_runner_exits_3_and_nothing_leaks(
    seeded: str,
    watcher: psycopg.Connection[Any],
    bouncer: Bouncer,
    tmp_path: Path,
    config: dict[str, str],
) -> None:
    pb = bouncer(mode="session", pool_size=4, **config)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path)
    with closed_gate(seeded) as gate:
        first = start_zdm("run", plan, "--dsn", pooled)
        wait_for(lambda: gate_waiters(watcher), 60, "zdm at the gate", alive=first)
        second = zdm("run", plan, "--dsn", pooled)
        assert second.returncode == 3 and "locked" in second.stderr, output_of(second)
        open_gate(gate)
        done = first.wait()
    assert done.returncode == 0, output_of(done)
    assert_completed_once(watcher)
    assert scalar(watcher, "SELECT count(*) FROM users") == ROWS
    no_leak(pb, seeded)


@needs_pgbouncer
def test_session_pooling_runner_killed_and_another_started_at_once(
    seeded: str, watcher: psycopg.Connection[Any], bouncer: Bouncer, tmp_path: Path
) -> None:
    pb = bouncer(mode="session", pool_size=4)
    pooled = pb.dsn(seeded)
    plan = gated_plan(tmp_path)
    with closed_gate(seeded) as gate:
        first = start_zdm("run", plan, "--dsn", pooled)
        wait_for(lambda: gate_waiters(watcher), 60, "zdm at the gate", alive=first)
        first.kill()
        # Started at once: it either finds the plan still locked by the dying session (exit 3)
        # or takes it over; it never runs beside a live owner.
        outcomes = []
        open_gate(gate)
        for _ in range(50):
            done = zdm("run", plan, "--dsn", pooled)
            outcomes.append(done.returncode)
            assert done.returncode in (0, 3), output_of(done)
            if done.returncode == 0:
                break
    assert outcomes[-1] == 0, outcomes
    run = run_row(watcher, "pooled")
    assert run["status"] == "completed"
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    assert run["steps"]["additive[0]"]["attempts"] == 2  # the killed attempt and this one
    assert scalar(
        watcher, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_name'::regclass"
    )
    no_leak(pb, seeded)


# -- the lease ------------------------------------------------------------------------------


def test_the_lease_fences_out_a_runner_once_another_claims_the_run(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    ok = zdm("run", gated_plan(tmp_path), "--dsn", seeded)
    assert ok.returncode == 0, output_of(ok)
    run_id = int(scalar(watcher, "SELECT id FROM zdm.runs"))
    watcher.execute("UPDATE zdm.runs SET lease_expires = now() - interval '1 second'")
    first = Lease("zdm", run_id, new_token())
    assert first.claim(watcher) is None  # nobody's live lease was replaced
    assert first.still_owner(watcher) and first.renew(watcher)
    second = Lease("zdm", run_id, new_token())
    assert second.claim(watcher) == first.token  # a live lease taken over is reported
    assert not first.still_owner(watcher) and not first.renew(watcher)
    assert second.still_owner(watcher)
    # A runner that reconnects proves with the same check that nobody took the run meanwhile.
    short = Lease("zdm", run_id, second.token, lease_s=0)
    short.renew(watcher)
    assert not second.still_owner(watcher)  # its lease lapsed


def test_a_runner_that_lost_its_run_stops_without_touching_it(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    plan = gated_plan(tmp_path)
    with closed_gate(seeded) as gate:
        runner = start_zdm("run", plan, "--dsn", seeded)
        wait_for(lambda: gate_waiters(watcher), 60, "zdm at the gate", alive=runner)
        # Another runner claimed the run (as one would whose lock connection found it free).
        watcher.execute("UPDATE zdm.runs SET owner_token = 'another runner'")
        open_gate(gate)
        done = runner.wait()
    assert done.returncode == 3, output_of(done)
    assert "no longer owned by this runner" in done.stderr
    assert scalar(watcher, "SELECT to_regclass('idx_users_name')") is None  # the next unit
    run = run_row(watcher, "pooled")
    assert run["status"] == "running" and run["owner_token"] == "another runner"


def test_a_runner_whose_lock_connection_died_is_fenced_out_by_the_next(
    seeded: str, watcher: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """The plan's lock dies with the first runner's lock connection while its work goes on; a
    second runner then takes the lock and the run. The first stops at its next unit."""
    plan = gated_plan(tmp_path)
    with closed_gate(seeded) as gate:
        first = start_zdm("--log-format", "json", "run", plan, "--dsn", seeded)
        wait_for(
            lambda: gate_waiters(watcher) == 1, 60, "the first runner at the gate", alive=first
        )
        holder = scalar(
            watcher,
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = %s AND granted",
            [0x7A646D],
        )
        watcher.execute("SELECT pg_terminate_backend(%s)", [holder])
        second = start_zdm("--log-format", "json", "run", plan, "--dsn", seeded)
        wait_for(lambda: gate_waiters(watcher) == 2, 60, "both runners at the gate", alive=second)
        open_gate(gate)
        lost, won = first.wait(), second.wait()
    assert lost.returncode == 3, output_of(lost)
    assert "took run 1 over while this one was reconnecting" in lost.stderr
    assert "Traceback" not in lost.stderr
    assert won.returncode == 0, output_of(won)
    run = run_row(watcher, "pooled")
    assert run["status"] == "completed"
    assert scalar(watcher, "SELECT count(*) FROM zdm.runs") == 1
    units = scalar(
        watcher,
        "SELECT count(*) FROM zdm.events WHERE event = 'unit_done' AND ordinal = 1",
    )
    assert units == 1  # the index was built once, by the second runner
    assert scalar(
        watcher, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'idx_users_name'::regclass"
    )
