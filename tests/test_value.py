"""Value, not clicks: outcomes measured per customer and day, realised value per recommendation against the
customer's own baseline and the control group's trend, and value per customer with intervals (hand-made frames)."""
from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines.actions import load_catalogue
from pipelines.errors import SegoneError
from pipelines.value import OUTCOMES, daily_outcomes, realised_values, rewards, value_summary

D0 = date(2026, 11, 1)
CFG = rewards()


def _days(n: int, start: date = D0) -> list[date]:
    return [start + timedelta(days=k) for k in range(n)]


def test_every_catalogue_action_has_its_outcomes_in_config():
    ids = {a.id for a in load_catalogue()}
    assert ids == set(CFG["actions"])
    with pytest.raises(SegoneError, match="unknown outcomes"):
        rewards({**CFG, "actions": {"isa": ["clicks"]}})
    with pytest.raises(SegoneError, match="missing 'horizon_days'"):
        rewards({k: v for k, v in CFG.items() if k != "horizon_days"})


def test_daily_outcomes_from_balances_and_fees():
    days = _days(3)
    balances = pd.DataFrame([
        # customer A: current 200, -100, -100 (two days below zero); savings 0 -> 50 on day 2
        *[("A", "A01", "current", d, b) for d, b in zip([D0 - timedelta(days=1), *days], [300, 200, -100, -100])],
        *[("A", "A02", "savings", d, b) for d, b in zip([D0 - timedelta(days=1), D0, days[1]], [0, 0, 50])],
        # customer B: a card with 1000 owed, balance missing on day 3 (keeps the last one)
        ("B", "B01", "current", D0 - timedelta(days=1), 10.0), ("B", "B01", "current", D0, 10.0),
        ("B", "B03", "credit_card", D0, -1000.0), ("B", "B03", "credit_card", days[1], -1000.0),
    ], columns=["customer_id", "account_id", "product", "as_of", "balance"])
    fees = pd.DataFrame([("A", days[1], -5.0, "NON-STERLING TRANSACTION FEE"),
                         ("A", days[2], -12.0, "OVERDRAFT INTEREST")],
                        columns=["customer_id", "booking_date", "amount", "description"])
    out = daily_outcomes(balances, fees, days, CFG).set_index(["customer_id", "as_of"])
    a = out.loc["A"]
    daily = 0.399 / 365
    assert a["shortfall_days"].tolist() == [0.0, 1.0, 1.0]
    assert a["fees_and_interest"].tolist() == pytest.approx([0.0, 100 * daily + 5.0, 100 * daily])
    assert a["savings_added"].tolist() == pytest.approx([0.0, 50.0, 0.0])     # day 3 keeps the last balance
    assert a.loc[days[1], "product_margin"] == pytest.approx(50 * 0.015 / 365)
    b = out.loc["B"]
    assert b["product_margin"].tolist() == pytest.approx([1000 * 0.06 / 365] * 3)
    assert b["current_balance"].tolist() == [10.0, 10.0, 10.0]


def _outcomes(customers: dict[str, list[float]], start: date, kind: str = "savings_added") -> pd.DataFrame:
    rows = []
    for cid, values in customers.items():
        for k, v in enumerate(values):
            row = {"customer_id": cid, "as_of": start + timedelta(days=k), **{o: 0.0 for o in OUTCOMES}}
            row[kind] = v
            rows.append(row)
    return pd.DataFrame(rows)


def _recs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["recommendation_id", "customer_id", "as_of", "action_id", "action_class",
                                       "is_control"])


def test_an_accepted_sweep_is_worth_the_savings_it_added_beyond_baseline_and_trend():
    night = D0 + timedelta(days=27)            # 28 baseline days D0 .. night
    span = 28 + 7
    # A: saved 10 a day before the night, 110 a day after; C (control): 10 before, 20 after (everyone saved more)
    outcomes = _outcomes({"A": [10.0] * 28 + [110.0] * 7, "B": [0.0] * span, "C": [10.0] * 28 + [20.0] * 7}, D0)
    recs = _recs([("r1", "A", night, "safe_to_save_sweep", "commercial", False),
                  ("r2", "A", night, "easy_access_savings", "commercial", False),
                  ("r3", "B", night, "safe_to_save_sweep", "commercial", False)])
    at = pd.Timestamp(night + timedelta(days=1), tz="UTC") + pd.Timedelta(hours=9)
    responses = pd.DataFrame([("r1", "accepted", at), ("r2", "accepted", at), ("r3", "complained", at),
                              ("r3", "opened", at)], columns=["recommendation_id", "event", "event_at"])
    through = night + timedelta(days=7)
    values, per_day = realised_values(recs, responses, outcomes, {"C"}, through, CFG)
    v = values.set_index("recommendation_id")
    # 7 days x (110 - 10 baseline - 10 trend) x 0.05, shared by the two accepted savings recommendations
    assert v.loc["r1", "value"] + v.loc["r2", "value"] == pytest.approx(7 * 90 * 0.05)
    assert v.loc["r1", "value"] == pytest.approx(v.loc["r2", "value"])
    assert v.loc["r3", "value"] == pytest.approx(-25.0)          # not accepted: only the complaint counts
    assert v["matured"].all() and (v["days_measured"] == 7).all()
    assert per_day["value"].sum() == pytest.approx(7 * 90 * 0.05 - 25.0)
    # halfway through the window: measured so far, not matured
    half, _ = realised_values(recs, responses, outcomes, {"C"}, night + timedelta(days=3), CFG)
    h = half.set_index("recommendation_id")
    assert not h["matured"].any() and h["value"].isna().all()
    assert h.loc["r1", "value_to_date"] + h.loc["r2", "value_to_date"] == pytest.approx(3 * 90 * 0.05)


def test_an_unaccepted_recommendation_changes_nothing_and_untargeted_outcomes_do_not_count():
    night = D0 + timedelta(days=27)
    outcomes = _outcomes({"A": [0.0] * 28 + [1.0] * 7}, D0, kind="shortfall_days")
    recs = _recs([("w", "A", night, "shortfall_warning", "protective", False),
                  ("s", "A", night, "safe_to_save_sweep", "commercial", False)])
    at = pd.Timestamp(night + timedelta(days=1), tz="UTC")
    responses = pd.DataFrame([("w", "accepted", at), ("s", "accepted", at)],
                             columns=["recommendation_id", "event", "event_at"])
    values, _ = realised_values(recs, responses, outcomes, None, night + timedelta(days=7), CFG)
    v = values.set_index("recommendation_id")["value"]
    assert v["w"] == pytest.approx(7 * 1.0 * -4.0)                 # seven shortfall days more than the baseline
    assert v["s"] == 0.0                                            # a sweep does not answer for shortfall days
    none, _ = realised_values(recs, responses.iloc[0:0], outcomes, None, night + timedelta(days=7), CFG)
    assert (none["value"] == 0.0).all()


def test_value_summary_gives_groups_classes_and_uplift_with_intervals():
    day = D0 + timedelta(days=10)
    population = pd.DataFrame({"customer_id": ["t1", "t2", "t3", "t4", "c1", "c2"],
                               "is_control": [False] * 4 + [True] * 2})
    day_values = pd.DataFrame({"customer_id": ["t1", "t2", "c1"], "action_class": ["commercial", "protective",
                                                                                   "protective"],
                               "value": [4.0, 2.0, 1.0]})
    cumulative = pd.DataFrame({"customer_id": ["t1", "t1", "t2", "t3", "c1"],
                               "action_class": ["commercial", "protective", "protective", "service", "protective"],
                               "value": [10.0, 2.0, 4.0, 2.0, 2.0]})
    recs = pd.DataFrame({"is_control": [False, False, True], "action_class": ["commercial", "protective",
                                                                             "protective"],
                         "accepted": [True, False, True], "complained": [False, False, False],
                         "unsubscribed": [False, True, False]})
    out = value_summary(day_values, cumulative, population, recs, day, D0, CFG).set_index(["arm", "action_class"])
    treated = out.loc[("treated", "all")]
    assert treated["n_customers"] == 4
    assert treated["value_per_customer"] == pytest.approx(6.0 / 4)
    values = np.array([12.0, 4.0, 2.0, 0.0])
    se = values.std(ddof=1) / 2
    assert treated["cumulative_value_per_customer"] == pytest.approx(values.mean())
    assert treated["cumulative_ci_low"] == pytest.approx(values.mean() - 1.959964 * se, rel=1e-5)
    assert out.loc[("treated", "commercial"), "cumulative_value_per_customer"] == pytest.approx(10.0 / 4)
    assert out.loc[("control", "all"), "cumulative_value_per_customer"] == pytest.approx(1.0)
    uplift = out.loc[("uplift", "all")]
    assert uplift["cumulative_value_per_customer"] == pytest.approx(4.5 - 1.0)
    assert uplift["cumulative_ci_low"] < 3.5 < uplift["cumulative_ci_high"]
    assert treated["n_recommendations"] == 2 and treated["n_accepted"] == 1 and treated["acceptance_rate"] == 0.5
    assert treated["n_unsubscribes"] == 1
    assert (out["value_version"] == CFG["version"]).all() and (out["since"] == D0).all()


def test_the_gold_schemas_match_the_documented_tables():
    from pipelines.schemas import table_schema
    from pipelines.value import SCHEMAS

    for table, columns in SCHEMAS.items():
        documented = table_schema("gold", table)
        assert list(columns) == documented.data_column_names, table
        assert all(documented.columns[i].type == kind for i, kind in enumerate(columns.values())), table


def _silver_bank(paths, days: list[date], n_customers: int = 60, seed: int = 7) -> None:
    """A small silver lake: core current, savings and card accounts of customers in several buckets (balances and
    postings partitioned by load_date and the customer's bucket, as conform writes them), some balances missing,
    some fees, and an open-banking account that does not count."""
    from pipelines import lake

    rng = np.random.default_rng(seed)
    customers = [f"C{k:04d}" for k in range(n_customers)]
    accounts, balances, postings = [], [], []
    for c in customers:
        for product in rng.choice(["current", "savings", "credit_card", "loan"], size=int(rng.integers(1, 4)),
                                  replace=False):
            account = f"{c}-{product}"
            accounts.append((account, c, str(product), "core"))
            for d in [days[0] - timedelta(days=1), *days]:
                if rng.random() < 0.8:       # a missing balance keeps the last one
                    balances.append((c, account, d, float(rng.normal(50, 300)), "core"))
        accounts.append((f"{c}-ob", c, "current", "openbanking"))
        balances.append((c, f"{c}-ob", days[0], -5000.0, "openbanking"))
        for d in days:
            if rng.random() < 0.3:
                postings.append((c, d, float(-rng.integers(1, 30)), "MONTHLY FEE", "core", "fee"))
            postings.append((c, d, -12.5, "OVERDRAFT INTEREST", "core", "fee"))
            postings.append((c, d, -40.0, "SHOP", "core", "card"))
    con = lake.connect()
    frames = {"balances": pd.DataFrame(balances, columns=["customer_id", "account_id", "as_of", "balance", "source"]),
              "transactions": pd.DataFrame(postings, columns=["customer_id", "booking_date", "amount_base",
                                                              "description", "source", "channel"])}
    for table, frame in frames.items():
        paths.table("silver", table).mkdir(parents=True)
        frame["bucket"] = lake.bucket_of(frame["customer_id"])
        assert frame["bucket"].nunique() > 4
        for load, part in (("history", frame.iloc[::2]), (days[-1].isoformat(), frame.iloc[1::2])):
            con.register("part", part)
            con.execute(f"copy (select * from part) to '{paths.table('silver', table) / f'load_date={load}'}' "
                        f"(format parquet, partition_by (bucket))")
            con.unregister("part")
    snapshot = paths.table("silver", "accounts") / f"as_of={(days[0] - timedelta(days=1)).isoformat()}"
    snapshot.mkdir(parents=True)
    con.register("accounts", pd.DataFrame(accounts, columns=["account_id", "customer_id", "product", "source"]))
    con.execute(f"copy (select * from accounts) to '{snapshot / 'part-0.parquet'}' (format parquet)")
    con.close()


def test_outcomes_computed_a_bucket_at_a_time_equal_the_whole_banks(paths):
    """The gold customer_outcomes that measure_value writes are computed one customer bucket at a time (memory at a
    million customers): every day's partition holds exactly the rows, in the same order, that daily_outcomes gives
    over the whole bank's balances and fees at once; the outcomes read back for some customers are exactly theirs."""
    from pipelines import lake
    from pipelines.value import SCHEMAS, _read_outcome_inputs, compute_outcomes, ensure_outcomes

    days = _days(6)
    _silver_bank(paths, days)
    balances, fees = _read_outcome_inputs(paths, days[0], days[-1])
    assert balances["customer_id"].nunique() == 60 and len(fees)
    whole = daily_outcomes(balances, fees, days, CFG)
    written = compute_outcomes(paths, days, CFG)
    con = lake.connect()
    for d in days:
        expected = whole[whole["as_of"] == d].drop(columns="as_of").reset_index(drop=True)
        expected["value_version"] = str(CFG["version"])
        folder = lake.partition_path(paths, "gold", "customer_outcomes", as_of=d.isoformat())
        got = con.execute(f"select * from read_parquet('{folder}/*.parquet', hive_partitioning = false)").df()
        assert list(got.columns) == list(SCHEMAS["customer_outcomes"]) and written[d] == len(got) == 60
        # to the last bit but for pandas' groupby sum, whose rounding can depend on the other groups in the frame
        pd.testing.assert_frame_equal(got, expected[list(got.columns)], check_dtype=False, rtol=1e-12)
    con.close()
    some = {"C0001", "C0007", "C0042"}
    every, n_last = ensure_outcomes(paths, days[0], days[-1], CFG)
    mine, n_mine = ensure_outcomes(paths, days[0], days[-1], CFG, customers=some)
    assert n_last == n_mine == 60 and len(every) == 60 * len(days)
    pd.testing.assert_frame_equal(mine, every[every["customer_id"].isin(some)].reset_index(drop=True))
    nobody, n_nobody = ensure_outcomes(paths, days[0], days[-1], CFG, customers=set())
    assert nobody.empty and n_nobody == 60
