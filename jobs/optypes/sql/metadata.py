"""`metadata.extract`: the schemas, tables and columns of registered database engines.

Item: a registered instance name. Params: `schema` (only this schema; default every schema but the
database's own catalogs), `include_views` (default false). One result row per column:
_instance, schema, table, column, type, nullable, primary_key, foreign_key (`table.column` or empty).
"""

from typing import Any

import sqlalchemy as sa
from django import forms
from sqlalchemy.exc import SQLAlchemyError

from jobs.optypes.base import OperationType, register
from jobs.optypes.sql import common, engines

SYSTEM_SCHEMAS = {"information_schema", "pg_catalog", "pg_toast", "mysql", "performance_schema", "sys"}


class MetadataForm(forms.Form):
    schema = forms.CharField(
        required=False, max_length=200, label="Schema", help_text="Only this schema (default: all)."
    )
    include_views = forms.BooleanField(required=False, initial=False, label="Include views")


def _is_system_schema(name: str) -> bool:
    return name in SYSTEM_SCHEMAS or name.startswith(("pg_temp_", "pg_toast_temp_"))


def run_metadata_extract(ctx) -> dict[str, Any]:
    params = ctx.params
    name = ctx.label
    wanted_schema = params.get("schema") or None
    kinds = sa.engine.ObjectKind.TABLE
    if params.get("include_views"):
        kinds |= sa.engine.ObjectKind.ANY_VIEW
    rows: list[dict[str, Any]] = []
    tables = 0
    with common.connect(name, read_only=True) as connection:
        try:
            inspector = sa.inspect(connection)
            schemas = [s for s in inspector.get_schema_names() if not _is_system_schema(s)]
            if wanted_schema is not None:
                if wanted_schema not in inspector.get_schema_names():
                    raise common.SQLError(
                        f"{name}: no schema {wanted_schema!r} (schemas: {', '.join(schemas) or 'none'})."
                    )
                schemas = [wanted_schema]
            default_schema = inspector.default_schema_name
            for schema in schemas:
                # None means the connection's default schema, which some dialects need to be named so.
                schema_arg = None if schema == default_schema else schema
                columns = inspector.get_multi_columns(schema=schema_arg, kind=kinds)
                keys = inspector.get_multi_pk_constraint(schema=schema_arg, kind=kinds)
                foreign = inspector.get_multi_foreign_keys(schema=schema_arg, kind=kinds)
                for (_, table), table_columns in sorted(columns.items(), key=lambda entry: entry[0][1]):
                    tables += 1
                    primary_key: dict[str, Any] = dict(keys.get((schema_arg, table)) or {})
                    primary = set(primary_key.get("constrained_columns") or [])
                    references: dict[str, str] = {}
                    for key in foreign.get((schema_arg, table)) or []:
                        for local, remote in zip(key["constrained_columns"], key["referred_columns"], strict=False):
                            references[local] = f"{key['referred_table']}.{remote}"
                    for column in table_columns:
                        rows.append(
                            {
                                "_instance": name,
                                "schema": schema,
                                "table": table,
                                "column": column["name"],
                                "type": type_name(column["type"]),
                                "nullable": bool(column.get("nullable", True)),
                                "primary_key": column["name"] in primary,
                                "foreign_key": references.get(column["name"], ""),
                            }
                        )
                ctx.heartbeat(f"{schema}: {len(columns)} tables")
        except SQLAlchemyError as exc:
            url = common.find_instance(name).url
            raise common.SQLError(f"{name}: {engines.error_message(exc, url)}") from None
    ctx.add_rows(rows)
    return {"schemas": len(schemas), "tables": tables, "columns": len(rows)}


def type_name(column_type: Any) -> str:
    """The column type as its database names it; SQLAlchemy's generic text drops the time zone of
    `timestamp with time zone` (it prints TIMESTAMP)."""
    name = str(column_type)
    if getattr(column_type, "timezone", False) and " WITH TIME ZONE" not in name.upper():
        name = f"{name} WITH TIME ZONE"
    return name


register(
    OperationType(
        key="metadata.extract",
        label="Metadata extraction",
        run=run_metadata_extract,
        form=MetadataForm,
        description="Reads the schemas, tables and columns (type, nullable, primary and foreign keys) of "
        "registered database instances; one result row per column.",
        items_help="One registered instance name per item (see `manage.py batch instance list`).",
        check_items=common.check_instance_labels,
        instance_of=common.instance_of_label,
        items_are_instances=True,
    )
)
