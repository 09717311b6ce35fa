"""The Berka importer against the reference copy in ../shared/reference/berka: counts reconcile with the source,
signs, birth numbers, Prague offsets, end-of-day balances, the landing contract's formats, and bad rows counted."""
from __future__ import annotations

import gzip
import shutil
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from pipelines.sources.berka import (decode_birth_number, format_cents, import_berka, import_berka_command,
                             prague_midnight, write_transactions)
from pipelines.config import Paths
from pipelines.contract import classify_landing_file, landing_contract
from pipelines.errors import SegoneError
from tests.conftest import REFERENCE

BERKA = REFERENCE / "berka"
TRANSACTIONS_GZ = BERKA / "trans_first100000lines.asc.gz"
SMALL_TABLES = ("account", "card", "client", "disp", "district", "loan", "order")

pytestmark = pytest.mark.skipif(not TRANSACTIONS_GZ.exists(), reason="reference/berka is not available")

LANDING_FILES = ("customers", "accounts", "transactions", "balances", "consents", "crm_responses", "life_events",
                 "fx_rates")
TYPE_PATTERNS = {
    "id": r"[A-Za-z0-9_.:-]{1,64}",
    "int": r"-?\d+",
    "decimal2": r"-?\d+(\.\d{1,2})?",
    "decimal6": r"-?\d+(\.\d{1,6})?",
    "date": r"\d{4}-\d{2}-\d{2}",
    "timestamptz": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?([+-]\d{2}:\d{2}|Z)",
    "bool": r"true|false",
    "currency": r"[A-Z]{3}",
    "country": r"[A-Z]{2}",
    "mcc": r"\d{4}",
}


def read_landing(folder: Path, kind: str) -> pd.DataFrame:
    """A landing file kind as text, '' for empty cells (all parts of a split kind together)."""
    parts = sorted(folder.glob(f"{kind}.csv")) + sorted(folder.glob(f"{kind}-*.csv"))
    assert parts, f"no {kind} file in {folder}"
    return pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False) for p in parts], ignore_index=True)


def read_imported(summary: dict, kind: str) -> pd.DataFrame:
    """A kind as the import wrote it: the history and the night's folder together."""
    folders = [Path(summary["destination"])] + ([Path(summary["night"]["folder"])] if summary.get("night") else [])
    return pd.concat([read_landing(f, kind) for f in folders], ignore_index=True)


def read_source_transactions() -> pd.DataFrame:
    return pd.read_csv(TRANSACTIONS_GZ, sep=";", dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def default_import(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """What `segone import-berka` does: the history as of the last complete day."""
    paths = Paths(tmp_path_factory.mktemp("segone_home"))
    summary = import_berka_command(paths, BERKA)
    return summary, paths.landing_history


@pytest.fixture(scope="module")
def full_import(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """Every customer and account of the source, including those that start after the transaction window."""
    destination = tmp_path_factory.mktemp("full") / "history"
    return import_berka(BERKA, destination, include_later_entities=True), destination


@pytest.fixture(scope="module")
def transactions(default_import: tuple[dict, Path]) -> pd.DataFrame:
    return read_imported(default_import[0], "transactions").set_index("transaction_id", drop=False)


@pytest.fixture(scope="module")
def balances(default_import: tuple[dict, Path]) -> pd.DataFrame:
    return read_imported(default_import[0], "balances")


# ------------------------------------------------------------------------------------------------ counts


def test_full_import_has_every_client_and_account(full_import: tuple[dict, Path]) -> None:
    summary, folder = full_import
    customers = read_landing(folder, "customers")
    accounts = read_landing(folder, "accounts")
    assert len(customers) == 5369 and customers["customer_id"].is_unique
    assert (accounts["product"] == "current").sum() == 4500
    assert (accounts["product"] == "loan").sum() == 682
    assert summary["entities"]["cards_not_imported"] == 892
    assert summary["rejected_rows"] == 0


def test_default_import_reconciles_with_the_source(default_import: tuple[dict, Path],
                                                   transactions: pd.DataFrame) -> None:
    summary, folder = default_import
    entities = summary["entities"]
    customers = read_imported(summary, "customers")
    accounts = read_imported(summary, "accounts")
    assert len(customers) + entities["customers_starting_after_cutoff"] == 5369
    assert (accounts["product"] == "current").sum() + entities["accounts_opened_after_cutoff"] == 4500
    assert (accounts["product"] == "loan").sum() + entities["loans_granted_after_cutoff"] == 682
    # The README: exactly the 1,515 accounts opened by 1994-10-31 have postings in the partial copy.
    assert (accounts["product"] == "current").sum() == 1515

    source = read_source_transactions()
    assert len(source) == 99_999 == summary["transactions"]["source_rows"]
    cut_short = int((source["date"] == "941031").sum())
    assert cut_short == 1154 == summary["transactions"]["cut_short_day_rows_dropped"]
    excluded = (cut_short + summary["rejected_rows"]
                + summary["transactions"]["rows_on_accounts_opened_after_cutoff"])
    assert len(transactions) == len(source) - excluded == (summary["rows"]["transactions.csv"]
                                                           + summary["night"]["rows"]["transactions.csv"])
    assert set(transactions["transaction_id"]) == set("B" + source.loc[source["date"] != "941031", "trans_id"])


def test_cut_short_last_day_is_not_imported(default_import: tuple[dict, Path], transactions: pd.DataFrame,
                                            balances: pd.DataFrame) -> None:
    summary, _ = default_import
    assert summary["window"] == {"first_day": "1993-01-01", "last_complete_day": "1994-10-30",
                                 "entity_cutoff": "1994-10-30"}
    assert summary["transactions"]["cut_short_day"] == "1994-10-31"
    assert transactions["booked_at"].str.slice(0, 10).max() == "1994-10-30"
    assert balances["as_of"].max() == "1994-10-30"


def test_the_last_complete_day_is_the_nightly_landing_folder(default_import: tuple[dict, Path]) -> None:
    summary, history = default_import
    night = Path(summary["night"]["folder"])
    assert summary["night"]["day"] == "1994-10-30" == night.name and night.parent == history.parent
    assert summary["history_last_day"] == "1994-10-29"
    assert read_landing(history, "transactions")["booked_at"].str.slice(0, 10).max() == "1994-10-29"
    assert read_landing(history, "balances")["as_of"].max() == "1994-10-29"
    tonight = read_landing(night, "transactions")
    assert len(tonight) == summary["night"]["rows"]["transactions.csv"] > 0
    assert (tonight["booked_at"].str.slice(0, 10) == "1994-10-30").all()
    assert (read_landing(night, "balances")["as_of"] == "1994-10-30").all()
    # entities that start that day arrive with the night; everything earlier is in the history
    for kind, column in (("customers", "customer_since"), ("accounts", "opened_on")):
        assert (read_landing(night, kind)[column] == "1994-10-30").all()
        assert (read_landing(history, kind)[column] < "1994-10-30").all()
    assert sorted(p.name for p in night.iterdir()) == sorted(f"{k}.csv" for k in LANDING_FILES)


# ------------------------------------------------------------------------------------------------ values


def test_amount_signs_follow_the_direction(transactions: pd.DataFrame) -> None:
    assert transactions.loc["B695247", "amount"] == "700.00"      # PRIJEM VKLAD
    assert transactions.loc["B695340", "amount"] == "-9612.00"    # VYDAJ PREVOD NA UCET (SIPO)
    assert transactions.loc["B1450116", "amount"] == "-5400.00"   # VYDAJ VYBER
    assert transactions.loc["B144918", "amount"] == "-5166.00"    # type VYBER: a cash withdrawal
    assert transactions.loc["B3478302", "amount"] == "108.20"     # PRIJEM interest
    source = read_source_transactions()
    source.index = "B" + source["trans_id"]
    joined = transactions[["amount"]].join(source[["type", "amount"]], rsuffix="_source")
    direction = joined["type"].map({"PRIJEM": 1.0, "VYDAJ": -1.0, "VYBER": -1.0})
    assert (joined["amount"].astype(float) == direction * joined["amount_source"].astype(float)).all()
    assert not joined["amount"].str.startswith("-0.00").any()  # one VYDAJ of 0.00 (3455961) stays "0.00"


def test_birth_numbers_decode_without_keeping_sex(full_import: tuple[dict, Path]) -> None:
    decoded = decode_birth_number(pd.Series(["706213", "450204", "701313", "70621"], dtype="string"))
    assert decoded[0] == pd.Timestamp("1970-12-13")   # a woman: month 62 - 50
    assert decoded[1] == pd.Timestamp("1945-02-04")   # a man
    assert decoded[2:].isna().all()                   # month 13, and too short
    customers = read_landing(full_import[1], "customers").set_index("customer_id")
    assert customers.loc["B1", "birth_year"] == "1970" and customers.loc["B2", "birth_year"] == "1945"
    assert not {"gender", "sex", "birth_number"} & set(customers.columns)


def test_booked_at_carries_the_prague_offset_of_the_day(transactions: pd.DataFrame) -> None:
    days = pd.Series(pd.to_datetime(["1993-01-01", "1993-07-01", "1994-03-27", "1994-03-28", "1994-09-25",
                                     "1994-09-26"]))
    assert prague_midnight(days).tolist() == [
        "1993-01-01T00:00:00+01:00", "1993-07-01T00:00:00+02:00",
        "1994-03-27T00:00:00+01:00", "1994-03-28T00:00:00+02:00",  # summer time from 02:00 on 27 March
        "1994-09-25T00:00:00+02:00", "1994-09-26T00:00:00+01:00",  # until 1995 it ended in September
    ]
    assert transactions.loc["B695247", "booked_at"] == "1993-01-01T00:00:00+01:00"
    assert transactions.loc["B1450116", "booked_at"] == "1993-04-24T00:00:00+02:00"
    offsets = transactions["booked_at"].str.slice(19).unique()
    assert set(offsets) == {"+01:00", "+02:00"}


def test_channels_descriptions_and_counterparties(transactions: pd.DataFrame) -> None:
    expected = {
        "B695247": ("cash_deposit", "cash credit", ""),
        "B695340": ("direct_debit", "household payment", "EF:1222903"),
        "B637742": ("benefit", "old-age pension", "YZ:62457513"),
        "B695490": ("fee", "statement fee", ""),
        "B3452675": ("fee", "penalty interest on a negative balance", ""),
        "B3478302": ("interest", "interest credited", ""),
        "B1450116": ("atm", "cash withdrawal", ""),      # account "0" without a bank: no counterparty
        "B2349940": ("card", "card withdrawal", ""),
        "B144776": ("standing_order", "remittance to another bank", "WX:56978738"),  # executes a permanent order
    }
    for transaction_id, (channel, description, counterparty) in expected.items():
        row = transactions.loc[transaction_id]
        assert (row["channel"], row["description"], row["counterparty_id"]) == (channel, description, counterparty)
    assert (transactions["currency"] == "CZK").all() and (transactions["country"] == "CZ").all()
    assert (transactions["merchant_name"] == "").all() and (transactions["mcc"] == "").all()


def test_balances_are_the_running_balance_at_the_end_of_each_posting_day(
        transactions: pd.DataFrame, balances: pd.DataFrame) -> None:
    balance = balances.set_index(["account_id", "as_of"])["balance"]
    assert balance[("B2378", "1993-01-01")] == "700.00"       # the opening deposit
    assert balance[("B100", "1994-01-05")] == "12491.00"
    # Two postings on 1993-08-31; the running balance runs through 3506666 (18.00) and ends with 3478302
    # (108.20), against trans_id order.
    assert balance[("B9034", "1993-08-31")] == "33657.20"
    # One balance per account and posting day, no forward fill, and each is a Berka balance of that day.
    source = read_source_transactions()
    source = source[source["date"] != "941031"]
    source_days = pd.DataFrame({"account_id": "B" + source["account_id"],
                                "as_of": pd.to_datetime("19" + source["date"]).dt.strftime("%Y-%m-%d"),
                                "balance": source["balance"]})
    assert len(balances) == len(source_days[["account_id", "as_of"]].drop_duplicates())
    matched = balances.merge(source_days, on=["account_id", "as_of", "balance"]).drop_duplicates(
        ["account_id", "as_of"])
    assert len(matched) == len(balances)


def test_negative_balance_days_are_present(default_import: tuple[dict, Path], balances: pd.DataFrame) -> None:
    summary, _ = default_import
    negative = balances[balances["balance"].str.startswith("-")]
    assert len(negative) == summary["balances"]["negative_balance_account_days"] > 0
    assert summary["balances"]["negative_balance_rows_imported"] == 154  # the README's 154, none on the cut day
    assert ("B10266", "1994-02-12", "-2325.30") in set(negative.itertuples(index=False, name=None))
    assert summary["balances"]["account_days_inconsistent_beyond_rounding"] == 0


def test_consents_and_the_other_files(default_import: tuple[dict, Path]) -> None:
    summary, folder = default_import
    customers = read_imported(summary, "customers")
    consents = read_imported(summary, "consents")
    assert summary["consent_purposes_assumed"] == ["personalization", "life_events"]   # the command's default
    assert len(consents) == 2 * len(customers)
    purposes = consents.groupby("customer_id")["purpose"].agg(lambda p: ",".join(sorted(p)))
    assert (purposes == "life_events,personalization").all()
    assert (consents["granted"] == "true").all()
    merged = consents.merge(customers, on="customer_id")
    assert (merged["recorded_at"].str.slice(0, 10) == merged["customer_since"]).all()
    assert (merged["expires_at"] == "").all()
    assert read_landing(folder, "fx_rates").to_dict("records") == [{"currency": "CZK", "rate_to_base": "1.0"}]
    assert read_landing(folder, "life_events").empty and read_landing(folder, "crm_responses").empty
    accounts = read_imported(summary, "accounts")
    assert (accounts["currency"] == "CZK").all()
    assert (accounts[["closed_on", "overdraft_limit", "credit_limit"]] == "").all().all()


@pytest.mark.parametrize("which", ["default_import", "full_import", "night"])
def test_every_file_follows_the_landing_contract(which: str, request: pytest.FixtureRequest) -> None:
    summary, folder = request.getfixturevalue("default_import" if which == "night" else which)
    if which == "night":
        folder = Path(summary["night"]["folder"])
    contract = landing_contract()
    business_date = summary["window"]["last_complete_day"]
    for kind in LANDING_FILES:
        spec = contract[kind]
        for path in [*folder.glob(f"{kind}.csv"), *folder.glob(f"{kind}-*.csv")]:
            raw = path.read_bytes()
            assert b"\r" not in raw and raw.endswith(b"\n"), path.name
            header = raw.decode("utf-8").split("\n", 1)[0]
            assert header == ",".join(spec.column_names), path.name
        frame = read_landing(folder, kind)
        assert list(frame.columns) == spec.column_names
        for column in spec.columns:
            values = frame[column.name]
            present = values[values != ""]
            where = f"{kind}.{column.name}"
            if column.required:
                assert len(present) == len(values), f"{where}: empty required values"
            if column.type == "enum":
                assert present.isin(column.values).all(), where
            elif column.type == "text":
                assert (present.str.len() <= (column.max_length or 10**6)).all(), where
            else:
                assert present.str.fullmatch(TYPE_PATTERNS[column.type]).all(), where
            if column.type == "int" and len(present):
                numbers = present.astype(int)
                assert numbers.between(column.min, column.max).all(), where
            if column.not_after_d and which != "full_import" and len(present):
                assert present.str.slice(0, 10).max() <= business_date, where
        key = list(spec.key)
        assert not frame.duplicated(key).any(), f"{kind}: duplicate key {key}"


def test_format_cents_keeps_two_decimals() -> None:
    cents = pd.Series([0, 5, -5, 123456, -100, None], dtype="Int64")
    assert format_cents(cents).tolist() == ["0.00", "0.05", "-0.05", "1234.56", "-1.00", ""]


# ------------------------------------------------------------------------------------------------ bad rows


BAD_LINES = [
    '9000001;2378;930105;"XYZ";"VKLAD";100.00;800.00;"";;',          # unknown type: no direction
    '9000002;2378;930105;"PRIJEM";"VKLAD";;800.00;"";;',             # empty amount
    '9000003;999999;930105;"PRIJEM";"VKLAD";100.00;100.00;"";;',     # account not in account.asc
    '9000004;2378;931345;"PRIJEM";"VKLAD";100.00;800.00;"";;',       # no such date
    '9000005;2378;930105;"PRIJEM";"VKLAD";100.00;800.00;"";;;x;y',   # too many columns
    '9000006;2378;930105;"PRIJEM";"BITCOIN";100.00;800.00;"";;',     # unknown operation: kept, channel other
    '9000007;99999;930105;"PRIJEM";"VKLAD";100.00;100.00;"";;',      # its account has no owner (added below)
]


def small_berka(folder: Path, tables: tuple[str, ...] = SMALL_TABLES, extra_lines: list[str] | None = None,
                rows: int = 200) -> Path:
    """A Berka folder with the given small tables and the first `rows` transactions (plus `extra_lines`)."""
    folder.mkdir()
    for name in tables:
        shutil.copy(BERKA / f"{name}.asc", folder / f"{name}.asc")
    with gzip.open(TRANSACTIONS_GZ, "rb") as handle:
        lines = handle.read().split(b"\r\n")[:rows + 1]
    lines[100:100] = [line.encode() for line in extra_lines or []]
    (folder / "trans.asc").write_bytes(b"\r\n".join(lines) + b"\r\n")
    return folder


def test_bad_rows_are_counted_and_listed_not_dropped_silently(tmp_path: Path) -> None:
    # The header and 200 rows (1993-01-01 .. 1993-02-04), with the bad lines in the middle.
    source = small_berka(tmp_path / "berka", extra_lines=BAD_LINES)
    with open(source / "account.asc", "ab") as handle:
        handle.write(b'99999;1;"POPLATEK MESICNE";930101\r\n')  # no disposition names an owner

    paths = Paths(tmp_path / "home")
    summary = import_berka_command(paths, source)
    reasons = summary["rejected_by_reason"]
    assert reasons == {
        "trans.asc: unparseable line: too many columns": 1,
        "trans.asc: unknown type (direction)": 1,
        "trans.asc: amount empty or not an unsigned decimal": 1,
        "trans.asc: unknown account_id": 1,
        "trans.asc: invalid date": 1,
        "account.asc: no OWNER disposition": 1,
        "trans.asc: account rejected from account.asc": 1,
    }
    assert summary["rejected_rows"] == 7
    assert summary["transactions"]["source_rows"] == 207
    assert summary["transactions"]["rows_with_unknown_operation_kept_as_other"] == 1
    rejected = pd.read_csv(paths.home / "imports" / "berka" / "rejected_rows.csv", dtype=str, keep_default_na=False)
    assert set(rejected.loc[rejected["reason"] != "unparseable line: too many columns", "key"]) == {
        "9000001", "9000002", "9000003", "9000004", "9000007", "99999"}

    transactions = read_imported(summary, "transactions").set_index("transaction_id")
    kept = transactions.loc["B9000006"]
    assert (kept["channel"], kept["amount"]) == ("other", "100.00")
    dropped_day = summary["transactions"]["cut_short_day_rows_dropped"]
    assert len(transactions) == 207 - 6 - dropped_day
    assert summary["transactions"]["cut_short_day"] == "1993-02-04"


def test_a_rerun_replaces_the_history_whole(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    paths.landing_history.mkdir(parents=True)
    (paths.landing_history / "transactions-stale.csv").write_text("stale\n", encoding="utf-8")
    (paths.landing / "1994-10-30").mkdir()
    (paths.landing / "1994-10-30" / "transactions-stale.csv").write_text("stale\n", encoding="utf-8")
    import_berka_command(paths, BERKA)
    for folder in (paths.landing_history, paths.landing / "1994-10-30"):
        names = sorted(p.name for p in folder.iterdir())
        assert names == sorted(["customers.csv", "accounts.csv", "transactions.csv", "balances.csv", "consents.csv",
                                "life_events.csv", "crm_responses.csv", "fx_rates.csv"])
    # no staging folder left behind
    assert sorted(p.name for p in paths.landing.iterdir()) == ["1994-10-30", "history"]
    assert date.fromisoformat(read_landing(paths.landing_history, "balances")["as_of"].max()) == date(1994, 10, 29)
    import_berka_command(paths, BERKA, night=False)       # everything in the history, as before the nights
    assert date.fromisoformat(read_landing(paths.landing_history, "balances")["as_of"].max()) == date(1994, 10, 30)


def test_a_subset_of_accounts_is_a_small_real_bank(tmp_path: Path) -> None:
    paths = Paths(tmp_path)
    summary = import_berka_command(paths, BERKA, accounts=50, consents="personalization")
    accounts = read_imported(summary, "accounts")
    assert (accounts["product"] == "current").sum() == 50 and summary["rejected_rows"] == 0
    assert summary["account_subset"]["accounts_kept"] == 50
    transactions = read_imported(summary, "transactions")
    assert set(transactions["account_id"]) <= set(accounts["account_id"])
    assert summary["transactions"]["rows_on_accounts_outside_the_subset"] + len(transactions) \
        + summary["transactions"]["cut_short_day_rows_dropped"] == 99_999
    holders = set(read_imported(summary, "customers")["customer_id"])
    assert set(accounts["customer_id"]) <= holders
    assert set(read_imported(summary, "consents")["purpose"]) == {"personalization"}
    with pytest.raises(SegoneError, match="unknown consent purposes"):
        import_berka_command(paths, BERKA, consents="personalization,telepathy")


def test_large_transaction_sets_are_split_into_numbered_files(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("pipelines.sources.berka.MAX_TRANSACTION_ROWS_PER_FILE", 2)
    frame = pd.DataFrame({"transaction_id": ["B1", "B2", "B3"], "account_id": "B9", "amount": "1.00"})
    assert write_transactions(frame, tmp_path) == {"transactions-0001.csv": 2, "transactions-0002.csv": 1}
    assert read_landing(tmp_path, "transactions")["transaction_id"].tolist() == ["B1", "B2", "B3"]
    assert classify_landing_file(tmp_path / "transactions-0002.csv") == ("transactions", "csv")


def test_optional_tables_may_be_missing_and_required_ones_may_not(tmp_path: Path) -> None:
    source = small_berka(tmp_path / "berka", tables=("client", "disp", "district", "account"), rows=2000)
    summary = import_berka(source, tmp_path / "history")
    assert summary["entities"]["loan_accounts"] == 0 and summary["entities"]["cards_not_imported"] == 0
    channels = summary["transactions"]["by_channel"]
    assert channels["transfer_out"] > 0 and "standing_order" not in channels  # no order.asc to match
    (source / "disp.asc").unlink()
    with pytest.raises(SegoneError, match="missing disp.asc"):
        import_berka(source, tmp_path / "history")
    with pytest.raises(SegoneError, match="no Berka transaction file"):
        import_berka(tmp_path / "nowhere", tmp_path / "history")
