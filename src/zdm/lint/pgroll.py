"""`zdm convert` of pgroll migrations: a JSON or YAML file with a top-level ``operations`` list
becomes the zdm plan that makes the same change.

Most operations map field for field onto zdm's ``changes`` and steps (zdm's names follow
pgroll's). What differs: pgroll columns are NOT NULL unless ``nullable: true``; ``pk`` is
``primary_key``; ``predicate`` is ``where``; enumerated values are lower case; an ``up`` or
``down`` written as ``SELECT …`` is a scalar subquery; ``create_constraint`` is added in cleanup
(the old version may still write values it refuses); ``sql`` with ``onComplete`` runs in cleanup.
An option zdm has no equivalent for is an error naming the file, the operation and the option.
Needs no pglast: only SQL migrations are parsed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from zdm.plan import PlanError, parse_plan
from zdm.plan.expand import offline_facts


class PgrollError(Exception):
    """A pgroll migration that cannot be converted; the message names file, operation and
    option."""


def is_pgroll(text: str) -> bool:
    """Whether ``text`` is a pgroll migration: a JSON or YAML mapping with an ``operations``
    list."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(data, dict) and isinstance(data.get("operations"), list)


def load(text: str, file: str) -> dict[str, Any]:
    try:
        data = json.loads(text) if text.lstrip().startswith("{") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as error:
        raise PgrollError(f"{file}: not JSON or YAML: {error}") from None
    if not isinstance(data, dict) or not isinstance(data.get("operations"), list):
        raise PgrollError(f"{file}: not a pgroll migration (no top-level 'operations' list)")
    return data


_SELECT = re.compile(r"^\s*select\b", re.I)
_BARE = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_$]*)\s*$")


def _expr(text: Any) -> Any:
    """pgroll runs ``up``/``down`` as written; a ``SELECT …`` is a scalar subquery in zdm."""
    if isinstance(text, str) and _SELECT.match(text):
        return f"({text.strip()})"
    return text


def _same(expr: Any, column: str) -> bool:
    """Whether ``expr`` is just the column itself (pgroll's 'no transformation')."""
    match = _BARE.match(expr) if isinstance(expr, str) else None
    return match is not None and match.group(1) == column


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class _Op:
    """One operation being converted, for located errors and field reads."""

    def __init__(self, file: str, index: int, kind: str, body: Any) -> None:
        self.file, self.index, self.kind = file, index, kind
        if not isinstance(body, dict):
            raise self.error("", "expected a mapping")
        self.body: dict[str, Any] = body

    def error(self, path: str, message: str) -> PgrollError:
        where = f"operations[{self.index}].{self.kind}" + (f".{path}" if path else "")
        return PgrollError(f"{self.file}: {where}: {message}")

    def unsupported(self, path: str, value: Any = None) -> PgrollError:
        shown = "" if value is None else f" ({json.dumps(value)})"
        return self.error(path, f"pgroll option{shown} has no zdm equivalent")

    def only(self, data: dict[str, Any], allowed: set[str], path: str = "") -> None:
        for key in data:
            if key not in allowed:
                raise self.unsupported(f"{path}.{key}" if path else key, data[key])


class Plan:
    """The zdm plan being written: changes, and steps by phase, in the order given."""

    def __init__(self) -> None:
        self.changes: list[dict[str, Any]] = []
        self.phases: dict[str, list[dict[str, Any]]] = {}

    def step(self, phase: str, kind: str, fields: dict[str, Any]) -> None:
        self.phases.setdefault(phase, []).append({kind: fields})

    def change(self, kind: str, fields: dict[str, Any]) -> None:
        self.changes.append({kind: fields})


def _reference(op: _Op, ref: dict[str, Any], path: str, table_level: bool) -> dict[str, Any]:
    allowed = {"name", "table", "on_delete", "on_update", "match_type"}
    allowed |= {"columns", "on_delete_set_columns"} if table_level else {"column", "deferrable"}
    op.only(ref, allowed, path)
    out: dict[str, Any] = {}
    for key, value in ref.items():
        if key in {"on_delete", "on_update", "match_type"}:
            value = _lower(value)
            if key == "match_type" and value == "partial":
                raise op.unsupported(f"{path}.{key}", ref[key])
        if key == "deferrable" and not table_level:
            if value:
                out["deferrable"] = True
            continue
        out[key] = value
    return out


def _check(op: _Op, check: Any, path: str) -> Any:
    if isinstance(check, dict):
        op.only(check, {"name", "constraint", "no_inherit"}, path)
        return {k: v for k, v in check.items() if k != "no_inherit" or v}
    return check


def _column(op: _Op, col: dict[str, Any], path: str, *, new_table: bool) -> dict[str, Any]:
    allowed = {"name", "type", "comment", "nullable", "unique", "pk", "default", "check"}
    allowed |= {"references"}
    if new_table:
        allowed |= {"generated"}
    op.only(col, allowed, path)
    out: dict[str, Any] = {"name": col.get("name"), "type": col.get("type")}
    if not col.get("nullable", False) and not col.get("pk", False):
        out["nullable"] = False
    if col.get("pk"):
        if not new_table:
            raise op.unsupported(f"{path}.pk", True)
        out["primary_key"] = True
    if col.get("unique"):
        out["unique"] = True
    for key in ("default", "comment"):
        if col.get(key) is not None:
            out[key] = col[key]
    if col.get("check") is not None:
        out["check"] = _check(op, col["check"], f"{path}.check")
    if col.get("references") is not None:
        ref = _reference(op, col["references"], f"{path}.references", table_level=False)
        if not new_table:
            for key in ("on_update", "match_type", "deferrable"):
                if key in ref:
                    raise op.unsupported(f"{path}.references.{key}", ref[key])
        out["references"] = ref
    generated = col.get("generated")
    if generated is not None:
        op.only(generated, {"expression", "identity"}, f"{path}.generated")
        gen: dict[str, Any] = {}
        if generated.get("expression") is not None:
            gen["expression"] = generated["expression"]
        identity = generated.get("identity")
        if identity is not None:
            op.only(
                identity,
                {"user_specified_values", "sequence_options"},
                f"{path}.generated.identity",
            )
            gen["identity"] = {
                k: _lower(v) if k == "user_specified_values" else v
                for k, v in identity.items()
                if v not in (None, "")
            }
        out["generated"] = gen
    return out


def _constraint(op: _Op, con: dict[str, Any], path: str) -> dict[str, Any]:
    allowed = {"name", "type", "columns", "check", "nulls_not_distinct", "deferrable"}
    allowed |= {"initially_deferred", "no_inherit", "references", "index_parameters", "exclude"}
    op.only(con, allowed, path)
    out: dict[str, Any] = {}
    for key, value in con.items():
        if value in (None, False, [], {}):
            continue
        if key == "references":
            value = _reference(op, value, f"{path}.references", table_level=True)
            value.pop("name", None)
        elif key == "index_parameters":
            op.only(value, {"tablespace", "storage_parameters", "include_columns"}, f"{path}.{key}")
        elif key == "exclude":
            op.only(value, {"index_method", "elements", "predicate"}, f"{path}.{key}")
        out[key] = value
    return out


def _create_table(op: _Op, plan: Plan) -> None:
    body = op.body
    op.only(body, {"name", "columns", "constraints", "comment"})
    columns = [
        _column(op, col, f"columns[{i}]", new_table=True)
        for i, col in enumerate(body.get("columns") or [])
    ]
    keyed = [col for col in columns if col.get("primary_key")]
    fields: dict[str, Any] = {"table": body.get("name"), "columns": columns}
    if len(keyed) > 1:
        for col in keyed:
            del col["primary_key"]
        fields["primary_key"] = [col["name"] for col in keyed]
    if body.get("comment") is not None:
        fields["comment"] = body["comment"]
    constraints = body.get("constraints") or []
    if constraints:
        fields["constraints"] = [
            _constraint(op, con, f"constraints[{i}]") for i, con in enumerate(constraints)
        ]
    plan.step("additive", "create_table", fields)


def _add_column(op: _Op, plan: Plan) -> None:
    op.only(op.body, {"table", "column", "up"})
    column = _column(op, op.body.get("column") or {}, "column", new_table=False)
    fields: dict[str, Any] = {"table": op.body.get("table"), "column": column}
    if op.body.get("up") is not None:
        fields["up"] = _expr(op.body["up"])
    plan.change("add_column", fields)


def _alter_column(op: _Op, plan: Plan) -> None:
    body = op.body
    allowed = {"table", "column", "name", "type", "up", "down", "nullable", "default"}
    allowed |= {"unique", "check", "references", "comment"}
    op.only(body, allowed)
    column = str(body.get("column"))
    fields: dict[str, Any] = {"table": body.get("table"), "column": body.get("column")}
    for key in ("name", "type", "nullable", "default", "comment"):
        if key in body:
            fields[key] = body[key]
    if body.get("unique") is not None:
        op.only(body["unique"], {"name"}, "unique")
        fields["unique"] = body["unique"]
    if body.get("check") is not None:
        fields["check"] = _check(op, body["check"], "check")
        fields["check"].pop("no_inherit", None)
    if body.get("references") is not None:
        ref = _reference(op, body["references"], "references", table_level=False)
        for key in ("on_update", "match_type", "deferrable"):
            if key in ref:
                raise op.unsupported(f"references.{key}", ref[key])
        fields["references"] = ref
    up, down = body.get("up"), body.get("down")
    # pgroll always goes through a copy and so takes up/down everywhere; zdm changes in place
    # what PostgreSQL allows, and there an unchanged column needs neither.
    constrains = any(body.get(k) is not None for k in ("unique", "check", "references"))
    constrains = constrains or body.get("nullable") is False
    copies = "type" in body or (up is not None and not _same(up, column) and constrains)
    if copies:
        if up is not None and not _same(up, column):
            fields["up"] = _expr(up)
        if down is not None:
            fields["down"] = _expr(down)
    plan.change("alter_column", fields)


def _drop_constraint(op: _Op, plan: Plan) -> None:
    op.only(op.body, {"table", "name", "up", "down"})
    fields: dict[str, Any] = {"table": op.body.get("table"), "name": op.body.get("name")}
    up, down = op.body.get("up"), op.body.get("down")
    match = _BARE.match(up) if isinstance(up, str) else None
    if down is not None and match is not None and not _same(down, match.group(1)):
        # `up` names the constrained column; the old version keeps getting `down`.
        fields.update(column=match.group(1), up=match.group(1), down=_expr(down))
    elif down is not None and match is None:
        raise op.error("up", "zdm needs the constrained column: give 'up' as the bare column name")
    plan.change("drop_constraint", fields)


def _mapped(op: _Op, key: str) -> dict[str, Any]:
    value = op.body.get(key) or {}
    if not isinstance(value, dict):
        raise op.error(key, "expected a mapping of column -> SQL expression")
    return value


def _changed_columns(op: _Op) -> list[str]:
    """The columns whose up or down is more than the column itself."""
    up, down = _mapped(op, "up"), _mapped(op, "down")
    names = [name for name, expr in up.items() if not _same(expr, name)]
    return names + [
        name for name, expr in down.items() if not _same(expr, name) and name not in names
    ]


def _drop_multicolumn_constraint(op: _Op, plan: Plan) -> None:
    op.only(op.body, {"table", "name", "up", "down"})
    fields: dict[str, Any] = {"table": op.body.get("table"), "name": op.body.get("name")}
    changed = _changed_columns(op)
    if len(changed) > 1:
        raise op.error("down", "zdm transforms one column while dropping a constraint, not several")
    if changed:
        name = changed[0]
        fields.update(
            column=name,
            up=_expr(_mapped(op, "up").get(name, name)),
            down=_expr(_mapped(op, "down").get(name, name)),
        )
    plan.change("drop_constraint", fields)


def _create_constraint(op: _Op, plan: Plan) -> None:
    body = op.body
    allowed = {"table", "name", "columns", "type", "check", "no_inherit", "references"}
    allowed |= {"up", "down"}
    op.only(body, allowed)
    table, name, kind = body.get("table"), body.get("name"), body.get("type")
    columns = body.get("columns") or []
    changed = _changed_columns(op)
    if changed:
        if kind != "check" or len(changed) > 1:
            raise op.error(
                "up", "zdm transforms data for a new check constraint on one column only"
            )
        column = changed[0]
        fields: dict[str, Any] = {
            "table": table,
            "column": column,
            "check": {"name": name, "constraint": body.get("check")},
            "up": _expr(_mapped(op, "up").get(column, column)),
        }
        plan.change("alter_column", fields)
        return
    if kind == "unique":
        plan.step("cleanup", "add_unique", {"table": table, "name": name, "columns": columns})
    elif kind == "check":
        check: dict[str, Any] = {"table": table, "name": name, "check": body.get("check")}
        if body.get("no_inherit"):
            check["no_inherit"] = True
        plan.step("cleanup", "add_check", check)
    elif kind == "foreign_key":
        ref = _reference(op, body.get("references") or {}, "references", table_level=True)
        if "on_delete_set_columns" in ref:
            raise op.unsupported("references.on_delete_set_columns", ref["on_delete_set_columns"])
        ref.pop("name", None)
        step: dict[str, Any] = {
            "table": table,
            "name": name,
            "columns": columns,
            "references": {"table": ref.pop("table"), "columns": ref.pop("columns")},
        }
        step.update(ref)
        plan.step("cleanup", "add_foreign_key", step)
    elif kind == "primary_key":
        plan.change("add_primary_key", {"table": table, "name": name, "columns": columns})
    else:
        raise op.unsupported("type", kind)


def _create_index(op: _Op, plan: Plan) -> None:
    body = op.body
    allowed = {"table", "name", "columns", "predicate", "method", "unique", "storage_parameters"}
    op.only(body, allowed)
    columns: list[Any] = []
    raw = body.get("columns") or []
    if isinstance(raw, dict):  # an older form: column name -> options
        raw = [{"column": k, **(v or {})} for k, v in raw.items()]
    for i, col in enumerate(raw):
        if isinstance(col, str):
            columns.append(col)
            continue
        op.only(col, {"column", "collate", "sort", "nulls", "opclass"}, f"columns[{i}]")
        key = {k: _lower(v) if k in {"sort", "nulls"} else v for k, v in col.items() if v}
        if isinstance(key.get("opclass"), dict):
            op.only(key["opclass"], {"name", "params"}, f"columns[{i}].opclass")
            key["opclass"] = {k: v for k, v in key["opclass"].items() if v}
        columns.append(key["column"] if list(key) == ["column"] else key)
    fields: dict[str, Any] = {"table": body.get("table"), "name": body.get("name")}
    fields["columns"] = columns
    if body.get("unique"):
        fields["unique"] = True
    if body.get("predicate"):
        fields["where"] = body["predicate"]
    if body.get("method"):
        fields["method"] = _lower(body["method"])
    if body.get("storage_parameters"):
        fields["storage_parameters"] = body["storage_parameters"]
    plan.step("additive", "create_index", fields)


def _sql(op: _Op, plan: Plan) -> None:
    op.only(op.body, {"up", "down", "onComplete"})
    fields: dict[str, Any] = {"up": op.body.get("up")}
    if op.body.get("down") is not None:
        fields["down"] = op.body["down"]
    plan.step("cleanup" if op.body.get("onComplete") else "additive", "sql", fields)


def _simple(kind: str, renames: dict[str, str], phase: str | None = None) -> Any:
    """An operation whose fields carry over (some renamed) to a change, or to a step of
    `phase`."""

    def convert(op: _Op, plan: Plan) -> None:
        fields = {renames.get(key, key): value for key, value in op.body.items()}
        if phase is None:
            plan.change(kind, fields)
        else:
            plan.step(phase, kind, fields)

    return convert


_CONVERTERS: dict[str, Any] = {
    "create_table": _create_table,
    "add_column": _add_column,
    "alter_column": _alter_column,
    "drop_constraint": _drop_constraint,
    "drop_multicolumn_constraint": _drop_multicolumn_constraint,
    "create_constraint": _create_constraint,
    "create_index": _create_index,
    "sql": _sql,
    "drop_table": _simple("drop_table", {"name": "table"}, "cleanup"),
    "drop_index": _simple("drop_index", {}, "cleanup"),
    "rename_table": _simple("rename_table", {}),
    "rename_column": _simple("rename_column", {}),
    "drop_column": _simple("drop_column", {}),
    "rename_constraint": _simple("rename_constraint", {}),
    "set_replica_identity": _simple("set_replica_identity", {}),
}


def convert_pgroll(text: str, file: str, name: str) -> str:
    """The zdm plan (YAML) for a pgroll migration's text; raises PgrollError."""
    data = load(text, file)
    for key in data:
        if key not in {"name", "operations", "version_schema"}:
            raise PgrollError(f"{file}: {key}: pgroll option has no zdm equivalent")
    plan = Plan()
    for index, item in enumerate(data["operations"]):
        if not isinstance(item, dict) or len(item) != 1:
            raise PgrollError(f"{file}: operations[{index}]: expected a one-key mapping")
        ((kind, body),) = item.items()
        if kind not in _CONVERTERS:
            raise PgrollError(f"{file}: operations[{index}]: unknown pgroll operation {kind!r}")
        _CONVERTERS[kind](_Op(file, index, kind, body), plan)
    out: dict[str, Any] = {"version": 1, "name": name}
    out["description"] = f"converted from pgroll migration {Path(file).name}"
    if data.get("version_schema"):
        out["version_schema"] = data["version_schema"]
    if plan.changes:
        out["gates"] = ["cleanup"]
        out["changes"] = plan.changes
    if plan.phases:
        order = ["additive", "dual_write", "backfill", "dual_read", "cleanup"]
        out["phases"] = {phase: plan.phases[phase] for phase in order if phase in plan.phases}
    rendered = yaml.safe_dump(out, sort_keys=False, allow_unicode=True, width=100)
    try:
        parse_plan(rendered, f"{name}.yaml", facts=offline_facts)
    except PlanError as error:
        raise PgrollError(f"{file}: the converted plan is not valid:\n{error}") from None
    return rendered


_NUMBERED = re.compile(r"^\d+_[^_]")


def output_name(path: Path, position: int) -> str:
    """``01_create_tables.json`` -> ``01_create_tables.yaml``; an unnumbered file gets its
    position, so a folder keeps its order."""
    stem = path.stem
    return f"{stem}.yaml" if _NUMBERED.match(stem) else f"{position:03d}_{stem}.yaml"


def migration_files(folder: Path) -> list[Path]:
    """A folder's pgroll migrations (``.json``, ``.yaml``, ``.yml``), in name order."""
    return sorted(
        p for p in folder.iterdir() if p.is_file() and p.suffix in {".json", ".yaml", ".yml"}
    )
