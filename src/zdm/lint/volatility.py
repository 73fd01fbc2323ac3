"""Which functions make a column default volatile (needs no parser, so plan rules can use it)."""

from __future__ import annotations

#: Functions whose value changes per row: a default using one makes ADD COLUMN rewrite the table.
VOLATILE_FUNCTIONS = frozenset(
    {
        "random",
        "random_normal",
        "gen_random_uuid",
        "uuidv4",
        "uuidv7",
        "uuid_generate_v1",
        "uuid_generate_v1mc",
        "uuid_generate_v4",
        "clock_timestamp",
        "timeofday",
        "nextval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "gen_random_bytes",
        "gen_salt",
    }
)

#: Common immutable or stable functions: evaluated once, stored in the catalog, no rewrite.
NON_VOLATILE_FUNCTIONS = frozenset(
    {
        "now",
        "transaction_timestamp",
        "statement_timestamp",
        "current_setting",
        "lower",
        "upper",
        "trim",
        "btrim",
        "ltrim",
        "rtrim",
        "concat",
        "concat_ws",
        "format",
        "length",
        "substring",
        "replace",
        "left",
        "right",
        "lpad",
        "rpad",
        "md5",
        "to_char",
        "to_date",
        "to_timestamp",
        "to_json",
        "to_jsonb",
        "json_build_object",
        "jsonb_build_object",
        "json_build_array",
        "jsonb_build_array",
        "array_to_string",
        "string_to_array",
        "make_interval",
        "make_date",
        "date_trunc",
        "abs",
        "round",
        "floor",
        "ceil",
        "greatest",
        "least",
        "uuid_nil",
        "timezone",
    }
)
