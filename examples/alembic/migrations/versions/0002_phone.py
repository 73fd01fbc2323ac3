"""Add a filled phone column with zdm: five phases, batched backfill, no long lock.

The plan runs on zdm's own connections, outside Alembic's transaction (autocommit_block); a
killed deploy resumes the plan where it stopped on the next `alembic upgrade`.
"""

import os
from pathlib import Path

from alembic import context, op

from zdm.frameworks import run_plan

revision = "0002"
down_revision = "0001"

PLAN = Path(__file__).parent.parent.parent / "plans" / "add_phone.yaml"


def upgrade() -> None:
    if context.is_offline_mode():
        op.execute(f"-- zdm plan: zdm run {PLAN.name} (not expressible as plain SQL)")
        return
    with op.get_context().autocommit_block():
        run_plan(PLAN, os.environ["ZDM_DSN"])


def downgrade() -> None:
    from zdm import api

    with op.get_context().autocommit_block():
        api.rollback(PLAN, os.environ["ZDM_DSN"])
