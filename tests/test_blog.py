"""examples/blog: the seed document's schema as plans, applied by `zdm migrate examples/blog`.

The tests check what the seed's own SQL tests check (email unique among active users, soft
delete frees the email, the foreign key cascades) and what its triggers and functions promise.
The blog is migrated once per module; each test works in a transaction that is rolled back,
as the seed's `tests/test_migrations.sql` does.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import errors

from zdm import api
from zdm.demo.seed import create_schema, seed_users
from zdm.demo.testing import create_database, drop_database, unique_name
from zdm.logs import configure

ROOT = Path(__file__).resolve().parent.parent
BLOG = ROOT / "examples" / "blog"
ADD_PHONE = ROOT / "plans" / "add_phone.yaml"

SEED_INDEXES = {
    "users": {
        "users_pkey",
        "idx_users_email_unique",
        "idx_users_email",
        "idx_users_created_at",
        "idx_users_deleted_at",
        "idx_users_email_verified",
    },
    "posts": {
        "posts_pkey",
        "idx_posts_user_id",
        "idx_posts_status_published",
        "idx_posts_user_status_date",
        "idx_posts_covering_list",
        "idx_posts_title_lower",
    },
    "audit_logs": {
        "audit_logs_pkey",
        "idx_audit_table_operation",
        "idx_audit_record_id",
        "idx_audit_user_id",
        "idx_audit_created_at",
        "idx_audit_old_data_gin",
        "idx_audit_new_data_gin",
    },
}
SEED_CONSTRAINTS = {
    "users": {"users_pkey", "users_email_format", "users_name_length"},
    "posts": {
        "posts_pkey",
        "fk_posts_user",
        "posts_status_check",
        "posts_published_at_check",
        "posts_view_count_positive",
    },
    "audit_logs": {"audit_logs_pkey", "audit_logs_operation_check"},
}


@pytest.fixture(scope="module")
def blog_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A database with examples/blog migrated into it, shared by this module's tests."""
    name = unique_name("zdm_blog_")
    dsn = create_database(pg_admin_dsn, name)
    try:
        outcome = api.migrate(BLOG, dsn)
        assert outcome.status == "completed", outcome.message
        yield dsn
    finally:
        drop_database(pg_admin_dsn, name)


@pytest.fixture
def tx(blog_dsn: str) -> Iterator[psycopg.Connection[Any]]:
    """A connection in a transaction that is rolled back after the test."""
    with psycopg.connect(blog_dsn) as connection:
        connection.execute("SET search_path = blog")
        yield connection
        connection.rollback()


@pytest.fixture(autouse=True)
def _logs_to_stderr() -> None:
    """Another test's CliRunner may have left structlog writing to a closed stderr."""
    configure()


def _value(conn: psycopg.Connection[Any], query: str, *params: Any) -> Any:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return row[0]


def _user(conn: psycopg.Connection[Any], email: str, name: str = "Test User") -> Any:
    return _value(
        conn,
        "INSERT INTO users (email, name, password_hash) VALUES (%s, %s, 'hash') RETURNING id",
        email,
        name,
    )


def _post(conn: psycopg.Connection[Any], user: Any, status: str = "draft", title: str = "T") -> Any:
    return _value(
        conn,
        "INSERT INTO posts (user_id, title, content, status) VALUES (%s, %s, 'Content', %s)"
        " RETURNING id",
        user,
        title,
        status,
    )


def _savepoint_fails(conn: psycopg.Connection[Any], error: type[Exception], query: str) -> None:
    with pytest.raises(error), conn.transaction():
        conn.execute(query)


def test_schema_has_the_seed_tables_constraints_and_indexes(
    tx: psycopg.Connection[Any],
) -> None:
    for table, indexes in SEED_INDEXES.items():
        rows = tx.execute(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass"
            " AND indisvalid",
            [f"blog.{table}"],
        ).fetchall()
        assert {r[0].removeprefix("blog.") for r in rows} == indexes
        rows = tx.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass AND contype <> 'n'"
            " AND convalidated",
            [f"blog.{table}"],
        ).fetchall()
        assert {r[0] for r in rows} == SEED_CONSTRAINTS[table]
    assert _value(tx, "SELECT pg_get_indexdef('blog.idx_users_created_at'::regclass)").endswith(
        "(created_at DESC)"
    )
    assert (
        _value(
            tx,
            "SELECT confupdtype::text || confdeltype::text FROM pg_constraint WHERE conname = 'fk_posts_user'",
        )
        == "cc"
    )
    assert _value(tx, "SELECT obj_description('blog.users'::regclass, 'pg_class')").startswith(
        "User accounts"
    )
    # Nothing of the blog leaked into public.
    assert _value(tx, "SELECT to_regclass('public.users') IS NULL") is True


def test_email_unique_among_active_users(tx: psycopg.Connection[Any]) -> None:
    _user(tx, "test@example.com")
    _savepoint_fails(
        tx,
        errors.UniqueViolation,
        "INSERT INTO users (email, name, password_hash)"
        " VALUES ('test@example.com', 'Another User', 'hash456')",
    )


def test_soft_delete_frees_the_email(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "softdelete@example.com", "Soft Delete Test")
    tx.execute("SELECT soft_delete_user(%s)", [user])
    assert _value(tx, "SELECT deleted_at IS NOT NULL FROM users WHERE id = %s", user) is True
    again = _user(tx, "softdelete@example.com", "New User")
    assert again != user
    # A deleted user cannot be deleted twice.
    with (
        pytest.raises(errors.RaiseException, match="not found or already deleted"),
        tx.transaction(),
    ):
        tx.execute("SELECT soft_delete_user(%s)", [user])


def test_foreign_key_cascades(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "cascade@example.com", "Cascade Test")
    _post(tx, user)
    _post(tx, user, "published")
    tx.execute("DELETE FROM users WHERE id = %s", [user])
    assert _value(tx, "SELECT count(*) FROM posts WHERE user_id = %s", user) == 0
    _savepoint_fails(
        tx,
        errors.ForeignKeyViolation,
        "INSERT INTO posts (user_id, title, content) VALUES (gen_random_uuid(), 'x', 'y')",
    )


def test_check_constraints(tx: psycopg.Connection[Any]) -> None:
    for query in (
        "INSERT INTO users (email, name, password_hash) VALUES ('not-an-email', 'Ann', 'h')",
        "INSERT INTO users (email, name, password_hash) VALUES ('a|b@example.com', 'Ann', 'h')",
        "INSERT INTO users (email, name, password_hash) VALUES ('x@example.com', 'A', 'h')",
    ):
        _savepoint_fails(tx, errors.CheckViolation, query)
    user = _user(tx, "checks@example.com")
    _savepoint_fails(
        tx,
        errors.CheckViolation,
        f"INSERT INTO posts (user_id, title, content, status) VALUES ('{user}', 't', 'c', 'gone')",
    )
    _savepoint_fails(
        tx,
        errors.CheckViolation,
        f"INSERT INTO posts (user_id, title, content, view_count) VALUES ('{user}', 't', 'c', -1)",
    )


def test_published_at_follows_the_status(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "publish@example.com")
    published = _post(tx, user, "published")
    assert _value(tx, "SELECT published_at = now() FROM posts WHERE id = %s", published) is True
    draft = _post(tx, user, "draft")
    assert _value(tx, "SELECT published_at FROM posts WHERE id = %s", draft) is None
    tx.execute("UPDATE posts SET status = 'published' WHERE id = %s", [draft])
    assert _value(tx, "SELECT published_at IS NOT NULL FROM posts WHERE id = %s", draft) is True
    tx.execute("UPDATE posts SET status = 'archived' WHERE id = %s", [draft])
    assert _value(tx, "SELECT published_at FROM posts WHERE id = %s", draft) is None


def test_updated_at_is_kept_current(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "touch@example.com")
    post = _post(tx, user)
    tx.execute("UPDATE users SET updated_at = '2000-01-01', name = 'Touched' WHERE id = %s", [user])
    tx.execute("UPDATE posts SET updated_at = '2000-01-01', title = 'New' WHERE id = %s", [post])
    assert _value(tx, "SELECT updated_at = now() FROM users WHERE id = %s", user) is True
    assert _value(tx, "SELECT updated_at = now() FROM posts WHERE id = %s", post) is True


def test_audit_rows_are_written(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "audit@example.com")
    post = _post(tx, user, title="First")
    tx.execute("UPDATE posts SET title = 'Second', status = 'published' WHERE id = %s", [post])
    tx.execute("DELETE FROM posts WHERE id = %s", [post])
    rows = tx.execute(
        "SELECT table_name, operation, user_id, old_data->>'title', new_data->>'title',"
        " changed_fields FROM audit_logs WHERE record_id = %s ORDER BY id",
        [post],
    ).fetchall()
    assert rows == [
        ("posts", "INSERT", user, None, "First", []),
        ("posts", "UPDATE", user, "First", "Second", ["title", "status"]),
        ("posts", "DELETE", user, "Second", None, []),
    ]


def test_get_user_posts_paginates(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "pages@example.com")
    for i in range(3):
        _post(tx, user, "published", f"P{i}")
    _post(tx, user, "draft", "D")
    page = tx.execute(
        "SELECT title, status, total_count FROM get_user_posts(%s, 'published', 2, 0)", [user]
    ).fetchall()
    assert len(page) == 2 and all(r[1] == "published" and r[2] == 3 for r in page)
    rest = tx.execute("SELECT title FROM get_user_posts(%s, 'published', 2, 2)", [user]).fetchall()
    assert len(rest) == 1
    assert {r[0] for r in page} | {rest[0][0]} == {"P0", "P1", "P2"}
    every = tx.execute("SELECT title, total_count FROM get_user_posts(%s, NULL)", [user]).fetchall()
    assert len(every) == 4 and every[-1] == ("D", 4)  # drafts (no published_at) come last


def test_increment_post_views(tx: psycopg.Connection[Any]) -> None:
    user = _user(tx, "views@example.com")
    post = _post(tx, user, "published")
    assert _value(tx, "SELECT increment_post_views(%s)", post) == 1
    assert _value(tx, "SELECT increment_post_views(%s, 5)", post) == 6
    draft = _post(tx, user, "draft")
    with pytest.raises(errors.RaiseException, match="not found or not published"), tx.transaction():
        tx.execute("SELECT increment_post_views(%s)", [draft])


def test_get_popular_posts(tx: psycopg.Connection[Any]) -> None:
    alice = _user(tx, "alice@example.com", "Alice")
    bob = _user(tx, "bob@example.com", "Bob")
    gone = _user(tx, "gone@example.com", "Gone")
    a = _post(tx, alice, "published", "A")
    b = _post(tx, bob, "published", "B")
    old = _post(tx, bob, "published", "Old")
    g = _post(tx, gone, "published", "G")
    _post(tx, alice, "draft", "Draft")
    for post, views in ((a, 5), (b, 9), (old, 50), (g, 99)):
        tx.execute("SELECT increment_post_views(%s, %s)", [post, views])
    tx.execute("UPDATE posts SET published_at = now() - interval '30 days' WHERE id = %s", [old])
    tx.execute("SELECT soft_delete_user(%s)", [gone])
    rows = tx.execute("SELECT title, view_count, author_name FROM get_popular_posts()").fetchall()
    assert rows == [("B", 9, "Bob"), ("A", 5, "Alice")]
    assert len(tx.execute("SELECT * FROM get_popular_posts(60, 1)").fetchall()) == 1
    assert tx.execute("SELECT title FROM get_popular_posts(60)").fetchall()[0] == ("Old",)


def test_blog_then_add_phone_then_its_rollback(pg_admin_dsn: str, tmp_path: Path) -> None:
    """The acceptance path: `zdm migrate examples/blog` on an empty database, then
    plans/add_phone.yaml on a seeded public.users, then its rollback."""
    name = unique_name("zdm_t_")
    dsn = create_database(pg_admin_dsn, name)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "zdm", "migrate", str(BLOG), "--dsn", dsn],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        assert "applied 5 of 5 migrations" in done.stderr
        with psycopg.connect(dsn, autocommit=True) as conn:
            create_schema(conn)
            seed_users(conn, 3000)
            before = _value(
                conn,
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.users'::regclass AND attnum > 0 AND NOT attisdropped",
            )
            run = api.run_plan(ADD_PHONE, dsn)
            assert run.status == "completed", run.message
            assert _value(conn, "SELECT count(*) FROM public.users WHERE phone IS NULL") == 0
            back = api.rollback(ADD_PHONE, dsn)
            assert back.status == "rolled_back", back.message
            assert _value(conn, "SELECT to_regclass('public.idx_users_phone') IS NULL") is True
            after = _value(
                conn,
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'public.users'::regclass AND attnum > 0 AND NOT attisdropped",
            )
            assert after == before
            assert _value(conn, "SELECT count(*) FROM public.users") == 3000
            # The blog is untouched, and a second migrate has nothing to do.
            assert _value(conn, "SELECT count(*) FROM blog.users") == 0
        again = api.migrate(BLOG, dsn)
        assert (again.status, again.applied) == ("completed", ())
        assert "all 5 migrations already applied" in again.message
        assert [(r.version, r.status) for r in api.history(dsn, BLOG)] == [
            (f"00{i}", "applied") for i in range(1, 6)
        ]
        # Every blog plan has its rollback: undone newest first, nothing of the blog is left.
        for plan in sorted(BLOG.glob("V*.yaml"), reverse=True):
            undone = api.rollback(plan, dsn)
            assert undone.status == "rolled_back", undone.message
        with psycopg.connect(dsn, autocommit=True) as conn:
            assert _value(conn, "SELECT to_regnamespace('blog') IS NULL") is True
            assert (
                _value(conn, "SELECT count(*) FROM pg_proc WHERE proname = 'get_user_posts'") == 0
            )
    finally:
        drop_database(pg_admin_dsn, name)
