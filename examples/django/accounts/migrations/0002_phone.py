"""Add a filled phone column with zdm instead of Django's AddField (which would add it, and a
backfill in RunPython would update every row in one long transaction).

The plan runs on zdm's own connections: this migration is not atomic, and its state operation
tells Django's model state about the column zdm adds.
"""

from pathlib import Path

from django.db import migrations, models

from zdm.frameworks import django_dsn, run_plan

PLAN = Path(__file__).resolve().parent.parent.parent / "plans" / "add_phone.yaml"


def forward(apps, schema_editor):  # type: ignore[no-untyped-def]
    run_plan(PLAN, django_dsn(schema_editor.connection))


def backward(apps, schema_editor):  # type: ignore[no-untyped-def]
    from zdm import api

    api.rollback(PLAN, django_dsn(schema_editor.connection))


class Migration(migrations.Migration):
    atomic = False
    dependencies = [("accounts", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[migrations.RunPython(forward, backward)],
            state_operations=[
                migrations.AddField(
                    "customer", "phone", models.CharField(max_length=20, null=True)
                )
            ],
        ),
    ]
