"""Plans that can run themselves (pipelines/plans.py) on hand-made customers: the safety rule (no plan makes the
projected P10 balance go below zero within its horizon), a customer whose P10 dips before the bill, debt with a thin
margin, an irregular earner's tax pot, consent, a customer with nothing safe to move; and the gate's own check of
every row against the forecast."""
from __future__ import annotations

import hashlib

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from pipelines import plans

D = date(2026, 11, 20)
MODEL = "global-test"


def forecast(customer: str, p10: tuple[float, float, float], p30: float = 0.02, safe: float | None = None
             ) -> list[dict]:
    safe = max(0.0, (p10[0] // 5) * 5) if safe is None else safe
    return [{"customer_id": customer, "horizon_days": h, "p_shortfall": p30 * (1 + i), "min_balance_p10": v,
             "safe_to_save": safe, "model_version": MODEL} for i, (h, v) in enumerate(zip((30, 60, 90), p10))]


def consent(*customers: str, without_personalization: tuple[str, ...] = (), open_banking: tuple[str, ...] = ()
            ) -> pd.DataFrame:
    rows = [{"customer_id": c, "is_personalization_allowed": c not in without_personalization,
             "is_open_banking_allowed": c in open_banking} for c in customers]
    return pd.DataFrame(rows)


def account(customer: str, account_id: str, product: str, balance: float, interest: float = 0.0) -> dict:
    return {"customer_id": customer, "account_id": account_id, "product": product, "balance": balance,
            "interest_charged": interest, "window_days": 92}


def bill(customer: str, in_days: int, amount: float, source: str = "scheduled_payment", ob: bool = True) -> dict:
    return {"customer_id": customer, "source": source, "due_date": D + timedelta(days=in_days), "amount": amount,
            "needs_open_banking": ob, "key": f"{customer}-{in_days}"}


NO_ROLES = pd.DataFrame(columns=["customer_id", "role", "amount", "reason", "window_days"])
NO_BILLS = pd.DataFrame(columns=plans.BILL_COLUMNS)
NO_INCOME = pd.DataFrame(columns=["customer_id", "monthly_income"])


def run(fc: list[dict], accounts: list[dict], bills: list[dict] | None = None, roles: pd.DataFrame = NO_ROLES,
        cons: pd.DataFrame | None = None, income: pd.DataFrame = NO_INCOME) -> pd.DataFrame:
    frame = pd.DataFrame(fc)
    cons = consent(*frame["customer_id"].unique()) if cons is None else cons
    out = plans.plan_frame(D, frame, roles, pd.DataFrame(accounts, columns=plans.ACCOUNT_COLUMNS),
                           pd.DataFrame(bills or [], columns=plans.BILL_COLUMNS), income, cons)
    # the safety rule on every row, as the gate checks it (published P10, no buffer)
    assert plans.safety_violations(D, out, frame, [30, 60, 90]).empty
    assert (out["p10_after"] >= 0).all()
    return out


def current(c: str) -> dict:
    return account(c, f"{c}-CUR", "current", 500.0)


def test_p10_dips_before_the_bill_no_provision_and_nothing_moves():
    # £600 bill due in 50 days; the P10 balance dips to £40 within 60 days: nothing can be set aside safely
    out = run(forecast("C_DIP", (100.0, 40.0, 40.0), safe=100.0), [current("C_DIP")], [bill("C_DIP", 50, 600.0)],
              cons=consent("C_DIP", open_banking=("C_DIP",)))
    assert out.empty


def test_provision_is_held_within_the_p10_path():
    out = run(forecast("C_BILL", (400.0, 400.0, 400.0)), [current("C_BILL")], [bill("C_BILL", 50, 600.0)],
              cons=consent("C_BILL", open_banking=("C_BILL",)))
    provision = out[out["action"] == "bill_provision"].sort_values("execute_on")
    # instalments on 1 Dec and 1 Jan of £300 each; the buffer (£50) leaves room for £350 in all
    assert list(provision["execute_on"]) == [date(2026, 12, 1), date(2027, 1, 1)]
    assert list(provision["amount"]) == [300.0, 50.0]
    assert provision["due_date"].eq(D + timedelta(days=50)).all()
    assert provision["consents"].eq("personalization,open_banking").all()
    assert "scheduled from your account at another bank on 9 Jan 2027" in provision["reason"].iloc[0]
    assert (out["p10_after"] >= 50 - 1e-9).all()
    assert out["amount"].sum() == 350.0           # nothing left for a sweep
    assert provision["reversible_until"].isna().all()
    assert "back" in provision["reversal"].iloc[0]


def test_open_banking_bill_needs_open_banking_consent():
    out = run(forecast("C_NOOB", (5000.0, 5000.0, 5000.0)), [current("C_NOOB")], [bill("C_NOOB", 40, 800.0)])
    assert "bill_provision" not in set(out["action"])      # the bill is known only from another bank's data
    assert set(out["action"]) == {"savings_sweep"}
    assert out["consents"].eq("personalization").all()


def test_debt_avalanche_with_a_thin_margin():
    accounts = [current("C_DEBT"),
                account("C_DEBT", "C_DEBT-LOAN", "loan", -4000.0, interest=80.0),       # ~7.9% a year
                account("C_DEBT", "C_DEBT-CARD", "credit_card", -1200.0, interest=0.0),  # paid in full: no interest
                account("C_DEBT", "C_DEBT-MORT", "mortgage", -90000.0, interest=1010.0)]  # ~4.5%
    out = run(forecast("C_DEBT", (120.0, 130.0, 300.0)), accounts)
    # the margin: P10 120 over 30 days, less the £50 buffer: £70 to the dearest debt, nothing else
    assert list(out["action"]) == ["debt_overpayment"]
    row = out.iloc[0]
    assert (row["to_account_id"], row["amount"], row["execute_on"]) == ("C_DEBT-LOAN", 70.0, D + timedelta(days=1))
    assert "7.9% a year" in row["reason"] and "highest rate" in row["reason"]
    assert row["reversible_until"] == D and row["p10_after"] == 50.0
    # with room, the loan is paid off first, then the mortgage (at most 10% of it), never the interest-free card
    rich = run(forecast("C_DEBT", (20000.0, 20000.0, 20000.0)), accounts)
    debts = rich[rich["action"] == "debt_overpayment"]
    assert list(debts["to_account_id"]) == ["C_DEBT-LOAN", "C_DEBT-MORT"]
    assert list(debts["amount"]) == [4000.0, 9000.0]
    assert "C_DEBT-CARD" not in set(rich["to_account_id"])


def test_irregular_earner_gets_a_tax_pot_each_month():
    roles = pd.DataFrame([{"customer_id": "C_FREE", "role": "irregular_earner", "amount": 9000.0, "window_days": 180,
                           "reason": "most of your income (90%) came from self-employed work"}])
    out = run(forecast("C_FREE", (3000.0, 2800.0, 2500.0)), [current("C_FREE")], roles=roles)
    tax = out[out["action"] == "tax_pot"]
    assert list(tax["execute_on"]) == [date(2026, 12, 1), date(2027, 1, 1), date(2027, 2, 1)]
    assert tax["amount"].eq(300.0).all()         # 20% of 9000 over 180 days, a month
    assert "most of your income (90%) came from self-employed work" in tax["reason"].iloc[0]
    sweep = out[out["action"] == "savings_sweep"]
    # the sweep gets what the 90-day P10 (2500, less the £50 buffer) leaves after three months of the pot
    assert sweep["amount"].iloc[0] == 2450.0 - 900.0
    assert sweep["to_account_id"].isna().all() and sweep["target"].iloc[0] == "a new easy-access savings pot"
    assert list(out["priority"]) == list(range(1, len(out) + 1))


def test_no_consent_and_nothing_safe_to_move():
    fc = (forecast("C_NOPERS", (5000.0, 5000.0, 5000.0)) + forecast("C_NEG", (-200.0, -300.0, -300.0))
          + forecast("C_RISKY", (900.0, 800.0, 700.0), p30=0.3) + forecast("C_WITHHELD", (np.nan,) * 3))
    accounts = [current(c) for c in ("C_NOPERS", "C_NEG", "C_RISKY", "C_WITHHELD")]
    out = run(fc, accounts, [bill("C_NEG", 20, 500.0, ob=False)],
              cons=consent("C_NOPERS", "C_NEG", "C_RISKY", "C_WITHHELD", without_personalization=("C_NOPERS",)))
    assert out.empty


def test_savings_sweep_into_the_largest_savings_account_and_versions():
    accounts = [current("C_SAVE"), account("C_SAVE", "S1", "savings", 100.0), account("C_SAVE", "S2", "savings", 900.0)]
    out = run(forecast("C_SAVE", (1000.0, 900.0, 800.0), safe=1000.0), accounts)
    assert list(out["action"]) == ["savings_sweep"]
    row = out.iloc[0]
    assert (row["to_account_id"], row["amount"]) == ("S2", 750.0)    # the 90-day P10 800 less the buffer
    assert row["policy_version"] == "plans-v1" and row["model_version"] == MODEL and len(row["plan_version"]) == 12
    again = run(forecast("C_SAVE", (1000.0, 900.0, 800.0), safe=1000.0), accounts)
    assert again["plan_version"].iloc[0] == row["plan_version"]        # reproducible
    assert again["instruction_id"].iloc[0] == row["instruction_id"]


def test_last_year_bill_and_a_small_bill_relative_to_income():
    bills = [bill("C_YEAR", 60, 700.0, source="last_year", ob=False), bill("C_YEAR", 30, 160.0, source="stream",
                                                                         ob=False)]
    income = pd.DataFrame([{"customer_id": "C_YEAR", "monthly_income": 2000.0}])
    out = run(forecast("C_YEAR", (4000.0, 4000.0, 4000.0)), [current("C_YEAR")], bills, income=income)
    provision = out[out["action"] == "bill_provision"]
    assert set(provision["due_date"]) == {D + timedelta(days=60)}    # £160 is under 20% of a £2000 monthly income
    assert "around 19 Jan 2026, so a similar bill is likely around 19 Jan 2027" in provision["reason"].iloc[0]


def test_random_customers_never_break_the_safety_rule():
    rng = np.random.default_rng(7)
    fc, accounts, bills, roles = [], [], [], []
    for i in range(300):
        c = f"C{i:04d}"
        p30 = float(rng.normal(800, 900))
        path = np.minimum.accumulate([p30, p30 - abs(rng.normal(0, 400)), p30 - abs(rng.normal(0, 800))])
        fc += forecast(c, tuple(path), p30=float(rng.uniform(0, 0.15)), safe=max(0.0, float(rng.normal(600, 500))))
        accounts += [current(c), account(c, f"{c}-L", "loan", -float(rng.uniform(100, 9000)),
                                         float(rng.uniform(0, 120)))]
        bills += [bill(c, int(rng.integers(2, 180)), float(rng.uniform(100, 3000)), ob=False)
                  for _ in range(int(rng.integers(0, 3)))]
        if rng.random() < 0.3:
            roles.append({"customer_id": c, "role": "irregular_earner", "amount": float(rng.uniform(1000, 30000)),
                          "window_days": 180, "reason": "most of your income came from self-employed work"})
    out = run(fc, accounts, bills, roles=pd.DataFrame(roles, columns=NO_ROLES.columns))
    assert out["customer_id"].nunique() > 50 and set(out["action"]) == set(plans.ACTIONS)
    assert out["instruction_id"].is_unique


def test_the_gate_check_finds_a_plan_that_breaks_the_rule():
    fc = pd.DataFrame(forecast("C_BAD", (100.0, 80.0, 80.0)))
    bad = pd.DataFrame([{"customer_id": "C_BAD", "execute_on": D + timedelta(days=40), "amount": 90.0}])
    broken = plans.safety_violations(D, bad, fc, [30, 60, 90])
    assert list(broken["horizon_days"]) == [60, 90]
    late = pd.DataFrame([{"customer_id": "C_BAD", "execute_on": D + timedelta(days=120), "amount": 5.0}])
    assert not plans.safety_violations(D, late, fc, [30, 60, 90]).empty      # beyond the forecast: not checkable
    orphan = pd.DataFrame([{"customer_id": "C_NONE", "execute_on": D + timedelta(days=1), "amount": 5.0}])
    assert not plans.safety_violations(D, orphan, fc, [30, 60, 90]).empty    # no forecast: breaks it


def test_instalment_days():
    assert plans.instalment_days(D, date(2027, 3, 2), 3) == [date(2026, 12, 1), date(2027, 1, 1), date(2027, 2, 1)]
    assert plans.instalment_days(D, date(2026, 11, 28), 3) == [D + timedelta(days=1)]
    assert plans.instalment_days(D, D + timedelta(days=1), 3) == []


def test_plans_reach_decide_as_actions_with_their_own_reason():
    """Decide reads tonight's plans (plan_context): savings_plan and debt_plan apply only to customers with such a
    plan, carry the plan's own reason, and need personalization like the plan did."""
    import copy

    from pipelines import decide
    from pipelines.actions import load_catalogue
    from tests.test_decide import HEALTHY

    accounts = [current("C_A"), account("C_A", "C_A-LOAN", "loan", -4000.0, interest=80.0), current("C_B")]
    rows = run(forecast("C_A", (2000.0, 2000.0, 2000.0)) + forecast("C_B", (-10.0, -10.0, -10.0)), accounts)
    context = decide.plan_context(rows)
    assert set(context["customer_id"]) == {"C_A"}
    a = context.iloc[0]
    assert a["has_debt_plan"] and not a["has_savings_plan"]      # the loan (7.9%) takes all that is safe
    assert a["plan_debt_amount"] == 1950.0 and "7.9% a year" in a["plan_debt_reason"]
    assert "£" not in a["plan_debt_reason"]          # the headline: no money figures (they reach the CRM)
    ctx = pd.DataFrame([HEALTHY | {"customer_id": "C_A"}, HEALTHY | {"customer_id": "C_B"},
                        HEALTHY | {"customer_id": "C_C", "is_personalization_allowed": False}]).merge(
        context, on="customer_id", how="left")
    pol = copy.deepcopy(decide.policy())
    pol["control_share"] = 0.0
    pol["top_k"] = 30
    decisions = decide.decide_frame(decide.complete_context(ctx, pol), D, None, load_catalogue(), pol)
    nba = decisions.next_best_actions
    got = nba[nba["action_id"].astype(str).isin(["savings_plan", "debt_plan"])]
    assert set(got["customer_id"]) == {"C_A"} and set(got["action_id"].astype(str)) == {"debt_plan"}
    assert got["reasons"].iloc[0] == ("a plan to pay £1950 off what you owe us: your loan costs you about 7.9% a year in "
                                      "interest, the only debt you hold with us that costs more than savings earn")
    log = decisions.decision_log
    why = log[(log["customer_id"] == "C_B") & (log["action_id"].astype(str) == "debt_plan")]["reason"]
    assert why.str.contains("no debt plan tonight").all() and len(why) == 1


def test_a_customer_with_a_savings_plan_is_not_offered_the_sweep_as_well():
    """One saving message a night: tonight's savings plan already moves what is safe to save, so the commercial
    safe-to-save sweep is withheld from that customer (and still offered to one without a plan), with the reason."""
    import copy

    from pipelines import decide
    from pipelines.actions import load_catalogue
    from tests.test_decide import HEALTHY

    accounts = [current("C_PLAN"), current("C_NONE")]
    rows = run(forecast("C_PLAN", (3000.0, 3000.0, 3000.0)), accounts)
    assert set(rows["action"]) == {"savings_sweep"}
    context = decide.plan_context(rows)
    base = HEALTHY | {"has_savings": True, "safe_to_save": 800.0, "p_shortfall_30": 0.01, "confidence": "high"}
    ctx = pd.DataFrame([base | {"customer_id": "C_PLAN"}, base | {"customer_id": "C_NONE"}]).merge(
        context, on="customer_id", how="left")
    pol = copy.deepcopy(decide.policy())
    pol["control_share"] = 0.0
    pol["top_k"] = 30
    decisions = decide.decide_frame(decide.complete_context(ctx, pol), D, None, load_catalogue(), pol)
    nba = decisions.next_best_actions
    offered = {c: set(nba[nba["customer_id"] == c]["action_id"].astype(str)) for c in ("C_PLAN", "C_NONE")}
    assert "savings_plan" in offered["C_PLAN"] and "safe_to_save_sweep" not in offered["C_PLAN"]
    assert "safe_to_save_sweep" in offered["C_NONE"] and "savings_plan" not in offered["C_NONE"]
    log = decisions.decision_log
    why = log[(log["customer_id"] == "C_PLAN") & (log["action_id"].astype(str) == "safe_to_save_sweep")]["reason"]
    assert why.str.contains("savings plan already moves").all() and len(why) == 1


# ---------------------------------------------------------------------------------------------------------------
# Last year's payments: the stage's query (plans.last_year_sql) against the rule written directly
# ---------------------------------------------------------------------------------------------------------------

def _last_year_by_the_rule(postings: str, loaded: str, base: str, day: date, prov: dict) -> str:
    """The rule as the stage first wrote it (up to 2026-12-07): a window over every payment of the year up to D
    (each posting's first load), the distinct payees paid after the quiet days, an anti join."""
    channels = ", ".join(f"'{c}'" for c in prov["last_year_channels"])
    start = (day + timedelta(days=1) - timedelta(days=365)).isoformat()
    end = (day + timedelta(days=int(prov["lookahead_days"])) - timedelta(days=365)).isoformat()
    quiet = (day - timedelta(days=int(prov["last_year_quiet_days"]))).isoformat()
    return f"""
        with paid as (
            select customer_id, source, booking_date, -cast({base} as double) as amount,
                coalesce(counterparty_id, merchant_name, regexp_replace(description, '[0-9]', '#', 'g')) as payee
            from {postings} where {loaded} and {base} < 0 and channel in ({channels})
                and booking_date <= date '{day.isoformat()}'
            qualify row_number() over (partition by transaction_id order by load_date) = 1),
        last_year as (
            select * from paid where booking_date between date '{start}' and date '{end}'),
        since as (
            select distinct customer_id, payee from paid where booking_date > date '{quiet}')
        select l.customer_id, 'last_year' as source, l.booking_date + interval 365 day as due_date,
            l.amount, l.source = 'openbanking' as needs_open_banking, md5(l.payee) as key
        from last_year as l anti join since using (customer_id, payee)
        order by all"""


def _random_postings(seed: int, n: int = 3000) -> pd.DataFrame:
    """Postings of 30 customers with few payees each (so that payees recur), dated from 420 days before D to 2 days
    after, on every channel, some without a base amount, some delivered again in a later load with another date,
    amount or payee (silver dedups only within its windows), in loads up to and after D."""
    rng = np.random.default_rng(seed)
    days = rng.integers(-420, 3, n)
    loads = np.array(["history"] + [(D + timedelta(days=int(k))).isoformat() for k in range(-40, 4)])
    rows = pd.DataFrame({
        "transaction_id": [f"T{i}" for i in range(n)],
        "load_date": rng.choice(loads, n),
        "customer_id": rng.choice([f"C{i:02d}" for i in range(30)], n),
        "source": rng.choice(["core", "core", "openbanking"], n),
        "booking_date": [D + timedelta(days=int(k)) for k in days],
        "amount": np.round(rng.normal(-120, 200, n), 2),
        "currency": rng.choice(["GBP", "GBP", "GBP", "EUR"], n),
        "channel": rng.choice(["direct_debit", "standing_order", "transfer_out", "card", "atm", "salary"], n),
        "counterparty_id": rng.choice([None, "P1", "P2", "P3"], n),
        "merchant_name": rng.choice([None, None, "SHOP", "ENERGY"], n),
        "description": rng.choice(["RENT 12", "RENT 34", "INSURANCE 2025", "TV LICENCE", None], n),
    })
    rows["amount_base"] = np.where(rng.random(n) < 0.1, np.nan,
                                   np.where(rows["currency"] == "GBP", rows["amount"], rows["amount"] * 0.85))
    again = rows.sample(frac=0.15, random_state=seed).copy()
    again["load_date"] = rng.choice(loads, len(again))
    shift = rng.random(len(again)) < 0.5
    again.loc[shift, "booking_date"] = [d + timedelta(days=int(k)) for d, k in
                                        zip(again.loc[shift, "booking_date"], rng.integers(-90, 90, int(shift.sum())))]
    again.loc[rng.random(len(again)) < 0.3, "counterparty_id"] = "P9"
    again.loc[rng.random(len(again)) < 0.3, "amount_base"] = -500.0
    rows = pd.concat([rows, again], ignore_index=True)
    # one delivery per transaction and load (silver rejects or skips a second one within a load)
    return rows.drop_duplicates(["transaction_id", "load_date"]).reset_index(drop=True)


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("quiet_days,lookahead_days", [(300, 180), (100, 180), (400, 60), (0, 365)])
def test_last_year_query_finds_what_the_rule_finds(seed: int, quiet_days: int, lookahead_days: int) -> None:
    import duckdb

    rows = _random_postings(seed)
    prov = {**plans.settings()["provision"], "last_year_quiet_days": quiet_days, "lookahead_days": lookahead_days}
    loaded = f"(load_date = 'history' or load_date <= '{D.isoformat()}')"
    base = "coalesce(amount_base, case when currency = 'GBP' then amount end)"
    con = duckdb.connect()
    con.register("rows_frame", rows)
    con.execute("create table postings as select * replace (cast(booking_date as date) as booking_date, "
                "cast(amount as decimal(18, 2)) as amount, cast(amount_base as decimal(18, 2)) as amount_base) "
                "from rows_frame")
    want = con.execute(_last_year_by_the_rule("postings", loaded, base, D, prov)).df()
    got = con.execute(plans.last_year_sql("postings", loaded, base, D, prov, "select customer_id from postings")).df()
    assert len(want) > 0
    pd.testing.assert_frame_equal(got, want, check_exact=True)


def test_last_year_reads_open_banking_postings_only_with_that_consent() -> None:
    """A core payment of a year ago, paid again since only on another bank's account (open banking): with the
    open-banking consent the later payment rules the bill out; without it neither it nor any other open-banking
    posting of the customer is read, so the core bill stands and no open-banking bill appears."""
    import duckdb

    prov = plans.settings()["provision"]
    year_ago = D - timedelta(days=365) + timedelta(days=10)
    rows = pd.DataFrame({
        "transaction_id": ["T1", "T2", "T3"], "load_date": ["history"] * 3, "customer_id": ["C1"] * 3,
        "source": ["core", "openbanking", "openbanking"],
        "booking_date": [year_ago, D - timedelta(days=5), year_ago + timedelta(days=3)],
        "amount": [-400.0, -410.0, -90.0], "amount_base": [-400.0, -410.0, -90.0], "currency": ["GBP"] * 3,
        "channel": ["direct_debit"] * 3, "counterparty_id": ["INSURER", "INSURER", "GYM"],
        "merchant_name": [None] * 3, "description": ["CAR INSURANCE"] * 2 + ["GYM"]})
    con = duckdb.connect()
    con.register("rows_frame", rows)
    con.execute("create table postings as select * replace (cast(booking_date as date) as booking_date) from rows_frame")
    loaded, base = "(load_date = 'history')", "amount_base"
    with_consent = con.execute(plans.last_year_sql("postings", loaded, base, D, prov, "select 'C1'")).df()
    assert with_consent["key"].tolist() == [hashlib.md5(b"GYM").hexdigest()]
    assert with_consent["needs_open_banking"].tolist() == [True]
    without = con.execute(plans.last_year_sql(
        "postings", loaded, base, D, prov, "select cast(null as varchar) as customer_id where false")).df()
    assert without["key"].tolist() == [hashlib.md5(b"INSURER").hexdigest()]
    assert without["amount"].tolist() == [400.0] and without["needs_open_banking"].tolist() == [False]
