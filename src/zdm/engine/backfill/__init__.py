"""The backfill: checkpointed key-range batches, resumable after a kill.

- `key`, `mapping`, `statements`: the SQL, built without a connection;
- `catalog`: what the backfill asks the catalog (the key, sizes, the split);
- `sizing`, `worker`, `gate`, `ranges`: one worker's walk over its range, batch by batch;
- `walk`: the `Backfiller` (ranges, supervision, throttles, the proof);
- `merging`: several backfill steps of one table in one walk;
- `signals`: SIGINT/SIGTERM stop a walk after the current batch;
- `dry_run`: what `--dry-run` prints for a backfill.
"""

from zdm.engine.backfill.catalog import estimate_rows, find_key, primary_key
from zdm.engine.backfill.dry_run import throttle_lines, walk_lines
from zdm.engine.backfill.key import Key
from zdm.engine.backfill.mapping import default_where, remaining_sql
from zdm.engine.backfill.merging import backfill_followers
from zdm.engine.backfill.signals import Control, Interrupted
from zdm.engine.backfill.sizing import INITIAL_AUTO_BATCH, BatchSizer
from zdm.engine.backfill.statements import batch_sql, upper_bound_sql
from zdm.engine.backfill.walk import PAUSED, Backfiller

__all__ = [
    "INITIAL_AUTO_BATCH",
    "PAUSED",
    "Backfiller",
    "BatchSizer",
    "Control",
    "Interrupted",
    "Key",
    "backfill_followers",
    "batch_sql",
    "default_where",
    "estimate_rows",
    "find_key",
    "primary_key",
    "remaining_sql",
    "throttle_lines",
    "upper_bound_sql",
    "walk_lines",
]
