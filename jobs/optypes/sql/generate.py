"""`data.generate`: synthetic, related tables (Faker) for the presets retail, finance, healthcare.

Item: a preset name, or any label with a `preset` param. Params:
- `rows`: rows of the preset's main table (order_items, transactions, encounters); the others are
  sized in proportion (see PRESETS: e.g. retail has rows/10 customers). Foreign keys always point at
  rows that exist.
- `seed`: the same seed, preset and rows give the same data; without one a seed is drawn and
  reported in the result so the data can be made again.
- `output`: `csv` (files kept as artifacts of the batch: GET /api/batches/{id}/artifacts/{path}) or
  `table` (into tables of the registered instance `instance`, optional `schema`, names prefixed with
  `table_prefix`, created if missing; `if_exists` `append` (default) or `replace` drops them first).
Rows are generated and written in chunks of 5000, with a heartbeat between chunks.
"""

import csv
import datetime as dt
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from django import forms
from faker import Faker
from sqlalchemy.exc import SQLAlchemyError

from jobs import artifacts
from jobs.optypes.base import OperationType, register
from jobs.optypes.sql import common, engines

CHUNK_ROWS = 5000
START = dt.date(2023, 1, 1)
END = dt.date(2025, 12, 31)

RowFunction = Callable[[Faker, int, dict[str, int]], dict[str, Any]]


@dataclass(frozen=True)
class TableSpec:
    name: str
    scale: float  # rows of this table per row of the main table
    columns: tuple[sa.Column, ...]
    row: RowFunction

    def size(self, rows: int) -> int:
        return max(1, round(rows * self.scale))

    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]


def _pk(name: str) -> sa.Column:
    return sa.Column(name, sa.Integer, primary_key=True, autoincrement=False)


def _fk(name: str, target: str) -> sa.Column:
    # The target is a spec table name; the prefixed name is filled in when tables are built.
    return sa.Column(name, sa.Integer, sa.ForeignKey(f"{{prefix}}{target}"), nullable=False)


def _money(fake: Faker, low: float, high: float) -> Decimal:
    return Decimal(str(round(fake.random.uniform(low, high), 2)))


def _moment(fake: Faker) -> dt.datetime:
    return fake.date_time_between_dates(
        dt.datetime.combine(START, dt.time()), dt.datetime.combine(END, dt.time(23, 59))
    ).replace(microsecond=0)


def _ref(fake: Faker, sizes: dict[str, int], table: str) -> int:
    return fake.random.randint(1, sizes[table])


# --- retail -----------------------------------------------------------------------------------


def _customer(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    first, last = fake.first_name(), fake.last_name()
    return {
        "customer_id": i,
        "first_name": first,
        "last_name": last,
        "email": f"{first}.{last}.{i}@example.com".lower().replace(" ", ""),
        "city": fake.city(),
        "country": fake.country_code(),
        "signup_date": fake.date_between_dates(START, END),
    }


CATEGORIES = ("Books", "Electronics", "Garden", "Grocery", "Home", "Sports", "Toys", "Clothing")


def _product(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "product_id": i,
        "sku": fake.bothify("??-#####").upper(),
        "name": f"{fake.color_name()} {fake.word().title()}",
        "category": fake.random_element(CATEGORIES),
        "unit_price": _money(fake, 1, 500),
    }


def _order(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "order_id": i,
        "customer_id": _ref(fake, sizes, "customers"),
        "ordered_at": _moment(fake),
        "status": fake.random_element(("placed", "paid", "shipped", "delivered", "returned", "cancelled")),
        "channel": fake.random_element(("web", "store", "mobile")),
    }


def _order_item(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "order_item_id": i,
        "order_id": _ref(fake, sizes, "orders"),
        "product_id": _ref(fake, sizes, "products"),
        "quantity": fake.random_int(1, 6),
        "unit_price": _money(fake, 1, 500),
        "discount": Decimal(fake.random_element(("0.00", "0.00", "0.05", "0.10", "0.20"))),
    }


# --- finance ----------------------------------------------------------------------------------


def _account(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "account_id": i,
        "holder_name": fake.name(),
        "iban": fake.iban(),
        "currency": fake.random_element(("EUR", "USD", "GBP", "CHF")),
        "opened_on": fake.date_between_dates(dt.date(2010, 1, 1), END),
        "branch_city": fake.city(),
    }


def _card(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "card_id": i,
        "account_id": _ref(fake, sizes, "accounts"),
        "provider": fake.random_element(("VISA", "Mastercard", "American Express", "Maestro")),
        "last_four": fake.numerify("####"),
        "expires": f"{fake.random_int(1, 12):02d}/{fake.random_int(26, 31)}",
        "status": fake.random_element(("active", "active", "active", "blocked", "expired")),
    }


def _transaction(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    debit = fake.random.random() < 0.7
    amount = _money(fake, 1, 2500)
    return {
        "transaction_id": i,
        "account_id": _ref(fake, sizes, "accounts"),
        "booked_at": _moment(fake),
        "amount": -amount if debit else amount,
        "counterparty": fake.company(),
        "category": fake.random_element(("salary", "rent", "groceries", "travel", "utilities", "transfer", "fees")),
        "reference": fake.bothify("TX-########"),
    }


# --- healthcare -------------------------------------------------------------------------------


def _patient(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    sex = fake.random_element(("F", "M"))
    return {
        "patient_id": i,
        "first_name": fake.first_name_female() if sex == "F" else fake.first_name_male(),
        "last_name": fake.last_name(),
        "birth_date": fake.date_between_dates(dt.date(1930, 1, 1), dt.date(2022, 12, 31)),
        "sex": sex,
        "blood_type": fake.random_element(("O+", "O-", "A+", "A-", "B+", "B-", "AB+", "AB-")),
        "postal_code": fake.postcode(),
    }


SPECIALTIES = ("General practice", "Cardiology", "Dermatology", "Neurology", "Oncology", "Pediatrics", "Surgery")
DIAGNOSES = ("I10", "E11.9", "J45.909", "M54.5", "K21.9", "F41.1", "J06.9", "N39.0", "R51", "S93.4")


def _practitioner(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    return {
        "practitioner_id": i,
        "name": fake.name(),
        "specialty": fake.random_element(SPECIALTIES),
        "license_number": fake.bothify("LIC-######"),
    }


def _encounter(fake: Faker, i: int, sizes: dict[str, int]) -> dict[str, Any]:
    admitted = _moment(fake)
    return {
        "encounter_id": i,
        "patient_id": _ref(fake, sizes, "patients"),
        "practitioner_id": _ref(fake, sizes, "practitioners"),
        "admitted_at": admitted,
        "discharged_at": admitted + dt.timedelta(hours=fake.random_int(1, 240)),
        "diagnosis_code": fake.random_element(DIAGNOSES),
        "ward": fake.random_element(("A", "B", "C", "ICU", "Outpatient")),
    }


S = sa.String
PRESETS: dict[str, tuple[TableSpec, ...]] = {
    "retail": (
        TableSpec(
            "customers",
            0.1,
            (_pk("customer_id"), sa.Column("first_name", S(100)), sa.Column("last_name", S(100)),
             sa.Column("email", S(255)), sa.Column("city", S(100)), sa.Column("country", S(2)),
             sa.Column("signup_date", sa.Date)),
            _customer,
        ),
        TableSpec(
            "products",
            0.05,
            (_pk("product_id"), sa.Column("sku", S(20)), sa.Column("name", S(200)), sa.Column("category", S(50)),
             sa.Column("unit_price", sa.Numeric(10, 2))),
            _product,
        ),
        TableSpec(
            "orders",
            0.4,
            (_pk("order_id"), _fk("customer_id", "customers.customer_id"), sa.Column("ordered_at", sa.DateTime),
             sa.Column("status", S(20)), sa.Column("channel", S(20))),
            _order,
        ),
        TableSpec(
            "order_items",
            1.0,
            (_pk("order_item_id"), _fk("order_id", "orders.order_id"), _fk("product_id", "products.product_id"),
             sa.Column("quantity", sa.Integer), sa.Column("unit_price", sa.Numeric(10, 2)),
             sa.Column("discount", sa.Numeric(4, 2))),
            _order_item,
        ),
    ),
    "finance": (
        TableSpec(
            "accounts",
            0.1,
            (_pk("account_id"), sa.Column("holder_name", S(200)), sa.Column("iban", S(40)),
             sa.Column("currency", S(3)), sa.Column("opened_on", sa.Date), sa.Column("branch_city", S(100))),
            _account,
        ),
        TableSpec(
            "cards",
            0.15,
            (_pk("card_id"), _fk("account_id", "accounts.account_id"), sa.Column("provider", S(40)),
             sa.Column("last_four", S(4)), sa.Column("expires", S(5)), sa.Column("status", S(20))),
            _card,
        ),
        TableSpec(
            "transactions",
            1.0,
            (_pk("transaction_id"), _fk("account_id", "accounts.account_id"), sa.Column("booked_at", sa.DateTime),
             sa.Column("amount", sa.Numeric(12, 2)), sa.Column("counterparty", S(200)),
             sa.Column("category", S(40)), sa.Column("reference", S(20))),
            _transaction,
        ),
    ),
    "healthcare": (
        TableSpec(
            "patients",
            0.2,
            (_pk("patient_id"), sa.Column("first_name", S(100)), sa.Column("last_name", S(100)),
             sa.Column("birth_date", sa.Date), sa.Column("sex", S(1)), sa.Column("blood_type", S(3)),
             sa.Column("postal_code", S(20))),
            _patient,
        ),
        TableSpec(
            "practitioners",
            0.02,
            (_pk("practitioner_id"), sa.Column("name", S(200)), sa.Column("specialty", S(100)),
             sa.Column("license_number", S(20))),
            _practitioner,
        ),
        TableSpec(
            "encounters",
            1.0,
            (_pk("encounter_id"), _fk("patient_id", "patients.patient_id"),
             _fk("practitioner_id", "practitioners.practitioner_id"), sa.Column("admitted_at", sa.DateTime),
             sa.Column("discharged_at", sa.DateTime), sa.Column("diagnosis_code", S(10)), sa.Column("ward", S(20))),
            _encounter,
        ),
    ),
}  # fmt: skip


def generate_rows(preset: str, table: TableSpec, rows: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """The rows of one table, in chunks; deterministic for (seed, preset, table)."""
    sizes = {spec.name: spec.size(rows) for spec in PRESETS[preset]}
    fake = Faker("en_US")
    fake.seed_instance(f"{seed}:{preset}:{table.name}")
    count = sizes[table.name]
    for start in range(1, count + 1, CHUNK_ROWS):
        yield [table.row(fake, i, sizes) for i in range(start, min(start + CHUNK_ROWS, count + 1))]


class DataGenerateForm(forms.Form):
    preset = forms.ChoiceField(
        required=False,
        choices=[("", "(the item label)")] + [(name, name) for name in PRESETS],
        label="Preset",
        help_text="Default: the item label.",
    )
    rows = forms.IntegerField(min_value=1, max_value=5_000_000, initial=1000, label="Rows of the main table")
    seed = forms.IntegerField(required=False, label="Seed", help_text="Same seed, same data.")
    output = forms.ChoiceField(choices=[("csv", "CSV files"), ("table", "Tables of an instance")], initial="csv")
    instance = forms.CharField(required=False, max_length=100, label="Instance", help_text="For output=table.")
    schema = forms.CharField(required=False, max_length=100, label="Schema", help_text="For output=table.")
    table_prefix = forms.RegexField(
        regex=r"^[A-Za-z_][A-Za-z0-9_]{0,40}$|^$",
        required=False,
        label="Table name prefix",
        help_text="For output=table, e.g. demo_ gives demo_customers.",
    )
    if_exists = forms.ChoiceField(
        choices=[("append", "Append"), ("replace", "Drop and recreate")], initial="append", label="If tables exist"
    )


def preset_of(label: str, params: dict[str, Any]) -> str:
    return params.get("preset") or label


def check_items(items: list[Any], params: dict[str, Any]) -> dict[str, list[str]]:
    """Each item resolves to a known preset; table output names a registered instance."""
    errors: dict[str, list[str]] = {}
    targets: list[tuple[str, str]] = []
    for index, item in enumerate(items):
        effective = {**params, **item.params}
        preset = preset_of(item.label, effective)
        if preset not in PRESETS:
            errors[f"items[{index}].label"] = [f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}."]
        if effective.get("output") == "table":
            if not effective.get("instance"):
                where = f"items[{index}].params.instance" if item.params else "params.instance"
                errors[where] = ["Output to tables needs an instance."]
            else:
                where = f"items[{index}].params.instance" if "instance" in item.params else "params.instance"
                targets.append((where, effective["instance"]))
        if len(errors) >= 20:
            break
    errors.update(common.check_instance_names(targets))
    return errors


def instance_of(label: str, params: dict[str, Any]) -> str | None:
    return params.get("instance") or None if params.get("output") == "table" else None


def run_data_generate(ctx) -> dict[str, Any]:
    params = ctx.params
    preset = preset_of(ctx.label, params)
    if preset not in PRESETS:
        raise common.BadItem(f"Unknown preset {preset!r}; presets: {', '.join(PRESETS)}.")
    rows = params.get("rows", 1000)
    seed = params.get("seed")
    if seed is None:
        seed = secrets.randbelow(2**31)
    tables = PRESETS[preset]
    if params.get("output", "csv") == "table":
        written = _write_tables(ctx, preset, tables, rows, seed)
        ctx.add_rows(
            [{"preset": preset, "table": name, "rows": count, "target": where} for name, count, where in written]
        )
        return {
            "preset": preset,
            "seed": seed,
            "output": "table",
            "instance": params["instance"],
            "tables": {name: count for name, count, _ in written},
        }
    files = _write_csv(ctx, preset, tables, rows, seed)
    ctx.add_rows([{"preset": preset, "table": f["table"], "rows": f["rows"], "target": f["path"]} for f in files])
    return {"preset": preset, "seed": seed, "output": "csv", "files": files}


def _write_csv(ctx, preset: str, tables: tuple[TableSpec, ...], rows: int, seed: int) -> list[dict[str, Any]]:
    batch_id = str(ctx.batch_id)
    directory = artifacts.operation_dir(batch_id, f"{ctx.seq:05d}-{preset}")
    files = []
    for table in tables:
        path = directory / f"{table.name}.csv"
        count = 0
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=table.column_names())
            writer.writeheader()
            for chunk in generate_rows(preset, table, rows, seed):
                writer.writerows(chunk)
                count += len(chunk)
                ctx.heartbeat(f"{preset}.{table.name}: {count} rows")
        relative = artifacts.relative_path(batch_id, path)
        files.append(
            {
                "table": table.name,
                "path": relative,
                "rows": count,
                "bytes": path.stat().st_size,
                "url": f"/api/batches/{batch_id}/artifacts/{relative}",
            }
        )
    artifacts.publish(batch_id, directory)
    return files


def _build_tables(tables: tuple[TableSpec, ...], prefix: str, schema: str | None) -> list[sa.Table]:
    metadata = sa.MetaData(schema=schema)
    built = []
    for spec in tables:
        columns = []
        for column in spec.columns:
            copy = column._copy()
            if column.foreign_keys:
                target = next(iter(column.foreign_keys)).target_fullname.replace("{prefix}", prefix)
                if schema:
                    target = f"{schema}.{target}"
                copy = sa.Column(column.name, column.type, sa.ForeignKey(target), nullable=False)
            columns.append(copy)
        built.append(sa.Table(f"{prefix}{spec.name}", metadata, *columns))
    return built


def _write_tables(ctx, preset: str, tables: tuple[TableSpec, ...], rows: int, seed: int) -> list[tuple[str, int, str]]:
    params = ctx.params
    name = params["instance"]
    schema = params.get("schema") or None
    built = _build_tables(tables, params.get("table_prefix", ""), schema)
    written = []
    # One transaction: a failed or cancelled operation leaves no half-written tables behind.
    with common.connect(name) as connection:
        try:
            metadata = built[0].metadata
            if params.get("if_exists") == "replace":
                metadata.drop_all(connection, tables=built, checkfirst=True)
            metadata.create_all(connection, tables=built, checkfirst=True)
            offsets = _key_offsets(connection, tables, built)
            for spec, table in zip(tables, built, strict=True):
                count = 0
                for chunk in generate_rows(preset, spec, rows, seed):
                    connection.execute(table.insert(), _shift_keys(spec, chunk, offsets))
                    count += len(chunk)
                    ctx.heartbeat(f"{preset}.{table.name}: {count} rows")
                written.append((spec.name, count, f"{name}:{table.fullname}"))
            connection.commit()
        except SQLAlchemyError as exc:
            url = common.find_instance(name).url
            raise common.SQLError(f"{name}: {engines.error_message(exc, url)}") from None
    return written


def _key_offsets(connection: sa.Connection, tables: tuple[TableSpec, ...], built: list[sa.Table]) -> dict[str, int]:
    """Per preset table, the largest key already in its table (0 when empty): appended rows take
    the keys after it, and their foreign keys follow, so appending twice never collides."""
    offsets: dict[str, int] = {}
    for spec, table in zip(tables, built, strict=True):
        key = next(column for column in spec.columns if column.primary_key)
        offsets[spec.name] = int(connection.execute(sa.select(sa.func.max(table.c[key.name]))).scalar() or 0)
    return offsets


def _shift_keys(spec: TableSpec, chunk: list[dict[str, Any]], offsets: dict[str, int]) -> list[dict[str, Any]]:
    shifts: dict[str, int] = {}
    for column in spec.columns:
        if column.primary_key:
            shifts[column.name] = offsets.get(spec.name, 0)
        for foreign in column.foreign_keys:
            target = foreign.target_fullname.replace("{prefix}", "").split(".")[0]
            shifts[column.name] = offsets.get(target, 0)
    shifts = {name: shift for name, shift in shifts.items() if shift}
    if not shifts:
        return chunk
    for row in chunk:
        for name, shift in shifts.items():
            row[name] += shift
    return chunk


register(
    OperationType(
        key="data.generate",
        label="Synthetic data generation",
        run=run_data_generate,
        form=DataGenerateForm,
        description="Generates related tables of realistic fake data (presets retail, finance, healthcare) "
        "as downloadable CSV files or into tables of a registered instance; reproducible with a seed.",
        items_help="One preset per item: retail, finance or healthcare (or any label with a `preset` "
        "param). Per-item params (rows, seed, output, instance...) override the base ones.",
        check_items=check_items,
        instance_of=instance_of,
    )
)
