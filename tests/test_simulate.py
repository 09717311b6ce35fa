"""The simulator: deterministic, contract-true landing files, consistent balances, flow-driven shortfalls, a
declared subset of the true life events, and a truth kept apart from the landing files."""
from __future__ import annotations

import datetime as dt
import hashlib
import re
from decimal import Decimal, ROUND_HALF_UP
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipelines.config import Paths
from pipelines.contract import classify_landing_file, landing_contract
from pipelines.sources.simulate import simulate

END = dt.date(2026, 11, 20)
ARGS = dict(customers=1200, days=60, end_date=END, seed=11, chunk_size=500)

PATTERNS = {
    "id": r"[A-Za-z0-9_.:-]{1,64}", "int": r"-?\d+", "decimal2": r"-?\d+(\.\d{1,2})?",
    "decimal6": r"-?\d+(\.\d{1,6})?", "date": r"\d{4}-\d{2}-\d{2}",
    "timestamptz": r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(Z|[+-]\d{2}:\d{2})", "bool": r"true|false",
    "currency": r"[A-Z]{3}", "country": r"[A-Z]{2}", "mcc": r"\d{4}", "text": r"(?s).*", "enum": r"(?s).*",
}


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("bank"))
    simulate(paths, fmt="csv", **ARGS)
    return paths


def _read(path: Path) -> pd.DataFrame:
    if path.name.endswith(".parquet"):
        return pq.read_table(path).to_pandas()
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _kind_files(folder: Path, kind: str) -> list[Path]:
    return sorted(p for p in folder.iterdir() if (classify_landing_file(p) or ("",))[0] == kind)


def _all(folder: Path, kind: str) -> pd.DataFrame:
    return pd.concat([_read(p) for p in _kind_files(folder, kind)], ignore_index=True)


def _digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(bank: Paths, tmp_path: Path) -> None:
    again = Paths(tmp_path / "again")
    simulate(again, fmt="csv", **ARGS)
    assert _digest(again.landing) == _digest(bank.landing)
    assert _digest(again.truth) == _digest(bank.truth)
    other = Paths(tmp_path / "other")
    simulate(other, fmt="csv", **{**ARGS, "seed": 12})
    assert _digest(other.landing) != _digest(bank.landing)


def test_every_file_follows_the_landing_contract(bank: Paths) -> None:
    contract = landing_contract()
    for folder in (bank.landing_history, bank.landing_day(END.isoformat())):
        kinds = {classify_landing_file(p)[0] for p in folder.iterdir() if classify_landing_file(p)}
        assert kinds == set(contract.files), folder
        for path in folder.iterdir():
            if not classify_landing_file(path):
                continue
            raw = path.read_bytes()
            assert b"\r\n" not in raw and not raw.startswith(b"\xef\xbb\xbf")
            spec = contract[classify_landing_file(path)[0]]
            frame = _read(path)
            assert list(frame.columns) == spec.column_names, path
            for col in spec.columns:
                values = frame[col.name]
                if col.required:
                    assert (values != "").all(), (path, col.name)
                filled = values[values != ""]
                pattern = "|".join(map(re.escape, col.values)) if col.type == "enum" else PATTERNS[col.type]
                bad = filled[~filled.str.fullmatch(pattern)]
                assert bad.empty, (path, col.name, bad.head().tolist())
                if col.not_after_d:
                    assert (filled.str[:10] <= END.isoformat()).all(), (path, col.name)
            if spec.kind != "event" and spec.key:
                assert not frame.duplicated(list(spec.key)).any(), path


def test_parquet_holds_the_same_text(tmp_path: Path, bank: Paths) -> None:
    paths = Paths(tmp_path / "pq")
    simulate(paths, fmt="parquet", **ARGS)
    for kind in ("transactions", "balances"):
        files = _kind_files(paths.landing_history, kind)
        assert files and all(p.suffix == ".parquet" for p in files)
        assert all(str(t) == "string" for t in pq.read_schema(files[0]).types)
        from_parquet = _all(paths.landing_history, kind).fillna("")
        from_csv = _all(bank.landing_history, kind)
        pd.testing.assert_frame_equal(from_parquet.reset_index(drop=True), from_csv.reset_index(drop=True))


def _gbp(frame: pd.DataFrame, rates: dict[str, Decimal]) -> pd.Series:
    """Account-currency amount of each posting: foreign amounts x rate_to_base, rounded half up to pence."""
    def convert(row: tuple[str, str]) -> Decimal:
        amount, currency = Decimal(row[0]), row[1]
        if currency == "GBP":
            return amount
        value = (abs(amount) * rates[currency]).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)
        return value if amount >= 0 else -value
    return pd.Series([convert(r) for r in zip(frame.amount, frame.currency)], index=frame.index)


def test_balances_follow_the_postings(bank: Paths) -> None:
    day = bank.landing_day(END.isoformat())
    tx = pd.concat([_all(bank.landing_history, "transactions"), _all(day, "transactions")], ignore_index=True)
    bal = pd.concat([_all(bank.landing_history, "balances"), _all(day, "balances")], ignore_index=True)
    rates = {r.currency: Decimal(r.rate_to_base) for r in _read(bank.landing_history / "fx_rates.csv").itertuples()}
    tx["gbp"] = _gbp(tx, rates)
    tx["as_of"] = tx.booked_at.str[:10]
    moved = tx.groupby(["account_id", "as_of"]).gbp.sum()
    bal["balance"] = bal.balance.map(Decimal)
    bal = bal.sort_values(["account_id", "as_of"])
    bal["previous"] = bal.groupby("account_id").balance.shift()
    bal["previous_day"] = bal.groupby("account_id").as_of.shift()
    steps = bal.dropna(subset=["previous"])
    assert (pd.to_datetime(steps.as_of) - pd.to_datetime(steps.previous_day)).dt.days.eq(1).all()
    flow = [moved.get((a, d), Decimal(0)) for a, d in zip(steps.account_id, steps.as_of)]
    diff = steps.balance - steps.previous - pd.Series(flow, index=steps.index)
    assert (diff == 0).all(), steps[diff != 0].head()
    assert tx.transaction_id.is_unique


def test_shortfalls_arise_from_the_cash_flows(bank: Paths) -> None:
    truth = pd.read_parquet(bank.truth / "shortfalls")
    people = pd.read_parquet(bank.truth / "customers").merge(truth, on="customer_id")
    below = people.first_below_zero.notna()
    assert 0.05 < below.mean() < 0.6
    assert people.first_below_limit.notna().sum() > 0
    # spending against income drives shortfalls: the heavy spenders cross far more often
    heavy = people.spend_ratio > people.spend_ratio.quantile(0.75)
    light = people.spend_ratio < people.spend_ratio.quantile(0.25)
    # (over 10,000 customers the gap is about 0.085; this sample of 1,200 varies by about 0.03 around it)
    assert below[heavy].mean() > below[light].mean() + 0.07
    people["lowest"] = people.min_balance / people.income_monthly
    # (about -0.07 over 10,000 customers)
    assert people.spend_ratio.corr(people.lowest, method="spearman") < -0.05
    # and overdraft interest is charged only to customers who were overdrawn
    tx = _all(bank.landing_history, "transactions")
    charged = set(tx.loc[tx.description == "OVERDRAFT INTEREST", "account_id"])
    assert charged and charged <= set(truth.loc[truth.first_below_zero.notna(), "account_id"])


def test_a_direct_debit_past_the_limit_is_returned_unpaid_with_a_fee(bank: Paths) -> None:
    """A direct debit that leaves the current account beyond its arranged limit at the end of the day comes back the
    same day ("UNPAID DIRECT DEBIT <payee>", the same amount) with one unpaid-item fee per customer and day; the
    account was beyond its limit before the return, and only then."""
    tx = _all(bank.landing_history, "transactions")
    tx["as_of"] = tx.booked_at.str[:10]
    tx["amount"] = tx.amount.map(Decimal)
    returned = tx[tx.description.str.startswith("UNPAID DIRECT DEBIT ")]
    fees = tx[tx.description == "UNPAID ITEM FEE"]
    assert len(returned) > 0 and (returned.channel == "direct_debit").all() and (returned.amount > 0).all()
    assert (fees.channel == "fee").all()
    paid = tx[(tx.channel == "direct_debit") & (tx.amount < 0)]
    for row in returned.head(200).itertuples():
        same = paid[(paid.account_id == row.account_id) & (paid.as_of == row.as_of) & (paid.amount == -row.amount)
                    & (paid.counterparty_id == row.counterparty_id)]
        assert len(same) >= 1, row
    per_day = returned.groupby(["account_id", "as_of"]).size()
    charged = fees.groupby(["account_id", "as_of"]).size()
    assert charged.index.equals(per_day.index) and (charged == 1).all()
    # beyond the limit: the end-of-day balance without the returns and the fee is below minus the arranged limit
    balances = _all(bank.landing_history, "balances").set_index(["account_id", "as_of"]).balance.map(Decimal)
    limits = _read(bank.landing_history / "accounts.csv").set_index("account_id").overdraft_limit
    back = returned.groupby(["account_id", "as_of"]).amount.sum()
    for (account, day), amount in back.head(200).items():
        limit = Decimal(limits[account] or "0")
        assert balances[(account, day)] - amount + Decimal("5.00") < -limit


def test_declared_life_events_are_a_subset_of_the_truth(bank: Paths) -> None:
    truth = pd.read_parquet(bank.truth / "life_events")
    declared = pd.concat([_read(bank.landing_history / "life_events.csv"),
                          _read(bank.landing_day(END.isoformat()) / "life_events.csv")])
    true_keys = set(zip(truth.customer_id, truth.event_type, truth.event_date.astype(str)))
    keys = set(zip(declared.customer_id, declared.event_type, declared.event_date))
    assert keys and keys <= true_keys
    share = len(keys) / len(true_keys)
    assert 0.15 < share < 0.5
    assert set(truth.event_type) >= {"moving_home", "new_job", "travel_abroad", "job_loss", "new_baby"}


def test_the_nightly_folder_holds_day_d_only(bank: Paths) -> None:
    day = bank.landing_day(END.isoformat())
    tx = _all(day, "transactions")
    assert len(tx) > 0 and (tx.booked_at.str[:10] == END.isoformat()).all()
    assert (_all(day, "balances").as_of == END.isoformat()).all()
    history = _all(bank.landing_history, "transactions")
    assert (history.booked_at.str[:10] < END.isoformat()).all()
    assert history.booked_at.str[:10].min() == (END - dt.timedelta(days=ARGS["days"])).isoformat()
    consents = _read(day / "consents.csv")
    assert (consents.recorded_at.str[:10] == END.isoformat()).all()


def test_truth_is_written_apart_from_the_landing_files(bank: Paths) -> None:
    assert not any(p.suffix == ".parquet" for p in bank.landing.rglob("*"))
    assert bank.truth.resolve() not in bank.landing.resolve().parents
    for table in ("customers", "life_events", "balances", "shortfalls"):
        assert list((bank.truth / table).glob("*.parquet")), table
    truth_bal = pd.read_parquet(bank.truth / "balances")
    landing_bal = pd.concat([_all(bank.landing_history, "balances"),
                             _all(bank.landing_day(END.isoformat()), "balances")])
    assert len(truth_bal) == len(landing_bal)


def _simulate_in_daemon(home: str) -> None:
    simulate(Paths(Path(home)), customers=300, days=15, end_date=END, seed=4, chunk_size=100)


def test_a_daemonic_process_writes_the_same_files_without_a_helper(tmp_path: Path) -> None:
    import multiprocessing
    process = multiprocessing.get_context("fork").Process(target=_simulate_in_daemon, args=(str(tmp_path / "d"),),
                                                          daemon=True)
    process.start()
    process.join(120)
    assert process.exitcode == 0
    _simulate_in_daemon(str(tmp_path / "n"))
    assert _digest(tmp_path / "d" / "landing") == _digest(tmp_path / "n" / "landing")
