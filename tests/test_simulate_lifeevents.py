"""Life-event signals in the simulated landing data: each true event leaves precursors and after-effects that are
far more common among customers with the event than without, look-alikes show up for customers without the event
and are recorded in truth/lookalikes, and only part of the events is declared (some late)."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from pipelines.config import Paths
from pipelines.sources.simulate import simulate

END = dt.date(2026, 11, 20)
DAYS = 150
START = END - dt.timedelta(days=DAYS)
ARGS = dict(customers=3000, days=DAYS, end_date=END, seed=7)


class Bank:
    def __init__(self, paths: Paths) -> None:
        nightly = paths.landing_day(END.isoformat())
        tx = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                        for folder in (paths.landing_history, nightly) for p in sorted(folder.glob("transactions*"))],
                       ignore_index=True)
        tx["customer_id"] = "C" + tx.account_id.str[1:-2]
        tx["date"] = pd.to_datetime(tx.booked_at.str[:10])
        tx["amount"] = tx.amount.astype(float)
        self.tx = tx
        self.customers = pd.read_parquet(paths.truth / "customers")
        self.events = pd.read_parquet(paths.truth / "life_events")
        self.events["event_date"] = pd.to_datetime(self.events.event_date)
        self.lookalikes = pd.read_parquet(paths.truth / "lookalikes")
        self.lookalikes["day"] = pd.to_datetime(self.lookalikes.day)
        self.all = set(self.customers.customer_id)
        self.declared = pd.concat([pd.read_csv(f / "life_events.csv", dtype=str, keep_default_na=False)
                                   for f in (paths.landing_history, nightly)])
        self.landing_customers = {where: pd.read_csv(f / "customers.csv", dtype=str, keep_default_na=False)
                                  for where, f in (("history", paths.landing_history), ("d", nightly))}

    def with_event(self, kind: str, lo: int = -10**4, hi: int = 10**4) -> set[str]:
        """Customers with an event of this kind between window days lo and hi (0: the first day of the window)."""
        e = self.events[self.events.event_type == kind]
        offset = (e.event_date - pd.Timestamp(START)).dt.days
        return set(e.customer_id[(offset >= lo) & (offset <= hi)])

    def without(self, *kinds: str) -> set[str]:
        return self.all - set(self.events.customer_id[self.events.event_type.isin(kinds)])

    def who(self, mask: pd.Series) -> set[str]:
        return set(self.tx.customer_id[mask])


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Bank:
    paths = Paths(tmp_path_factory.mktemp("lifebank"))
    simulate(paths, fmt="csv", **ARGS)
    return Bank(paths)


def _rate(who: set[str], group: set[str]) -> float:
    assert group, "empty group"
    return len(who & group) / len(group)


def _clearly_more(signal: set[str], event: set[str], others: set[str], at_least: float = 0.4,
                  factor: float = 4.0) -> None:
    """The signal is common among customers with the event and much rarer among the others."""
    with_event, without = _rate(signal, event), _rate(signal, others)
    assert with_event >= at_least and with_event > factor * without, (with_event, without, len(event))


def _first_seen_late(tx: pd.DataFrame, mask: pd.Series, days: int = 35) -> set[str]:
    """Customers whose first posting matching mask comes `days` or more into the window (a new stream)."""
    first = tx[mask].groupby("customer_id").date.min()
    return set(first.index[first >= pd.Timestamp(START + dt.timedelta(days=days))])


def _new_payee(tx: pd.DataFrame, mask: pd.Series, days: int = 35) -> set[str]:
    """Customers with a payee (counterparty) matching mask first seen `days` or more into the window."""
    first = tx[mask].groupby(["customer_id", "counterparty_id"]).date.min().reset_index()
    return set(first.customer_id[first.date >= pd.Timestamp(START + dt.timedelta(days=days))])


def test_buying_home_savings_professionals_deposit_and_mortgage(bank: Bank) -> None:
    tx, others = bank.tx, bank.without("buying_home")
    _clearly_more(bank.who(tx.mcc == "8911"), bank.with_event("buying_home", 85, DAYS + 25), others)
    _clearly_more(bank.who(tx.description.str.contains("CONVEYANCING")), bank.with_event("buying_home", 45, DAYS),
                  others, at_least=0.8)
    _clearly_more(bank.who(tx.description.str.contains("CLIENT AC COMPLETION")),
                  bank.with_event("buying_home", 10, DAYS), others, at_least=0.5)
    # saving up: more transfers to savings in the months before
    saves = tx[tx.description == "TRANSFER TO SAVINGS"].groupby("customer_id").size()
    savers = set(saves.index[saves >= 4])
    _clearly_more(savers, bank.with_event("buying_home", DAYS - 30, DAYS + 60), others, factor=2.0)
    # afterwards a mortgage payment (here or elsewhere) and new utility direct debits
    mortgage = tx.description.str.contains("MORTGAGE") & tx.channel.eq("direct_debit")
    _clearly_more(_first_seen_late(tx, mortgage), bank.with_event("buying_home", 0, DAYS - 60), others)
    energy = tx.mcc.eq("4900") & tx.description.str.contains("ENERGY|GAS|POWER|OVO|EON")
    _clearly_more(_new_payee(tx, energy, 45), bank.with_event("buying_home", 0, DAYS - 60),
                  others - bank.with_event("moving_home"))


def test_moving_home_removals_new_bills_and_region(bank: Bank) -> None:
    tx = bank.tx
    movers = bank.with_event("moving_home", 5, DAYS - 45)
    others = bank.without("moving_home", "buying_home")
    _clearly_more(bank.who(tx.mcc == "4214"), movers, others, at_least=0.5)
    _clearly_more(bank.who(tx.description.str.startswith("TENANCY DEPOSIT")), bank.with_event("moving_home", 25, DAYS),
                  others, at_least=0.8)
    council = tx.description.str.endswith("COUNCIL TAX")
    _clearly_more(_new_payee(tx, council, 30), movers, others)
    # a new region: the history customers file holds the region as of D-1, the nightly file the change of D
    people = bank.customers.set_index("customer_id")
    changed = people[people.region_changed_on.notna()]
    assert len(changed) > 0 and set(changed.index) <= bank.with_event("moving_home") | bank.with_event("buying_home")
    history = bank.landing_customers["history"].set_index("customer_id")
    before_d = changed[pd.to_datetime(changed.region_changed_on) < pd.Timestamp(END)]
    before_d = before_d[before_d.index.isin(history.index)]
    assert len(before_d) > 0 and (history.loc[before_d.index, "region"] == before_d.region_at_end).all()
    on_d = set(changed.index[pd.to_datetime(changed.region_changed_on) == pd.Timestamp(END)])
    assert on_d <= set(bank.landing_customers["d"].customer_id)


def test_new_baby_shopping_benefit_and_nursery(bank: Bank) -> None:
    tx, others = bank.tx, bank.without("new_baby")
    shops = tx[tx.mcc == "5641"].groupby("customer_id").size()
    _clearly_more(set(shops.index[shops >= 3]), bank.with_event("new_baby", 30, DAYS + 30), others)
    benefit = tx.description == "HMRC CHILD BENEFIT"
    _clearly_more(_first_seen_late(tx, benefit, 40), bank.with_event("new_baby", 0, DAYS - 60), others)
    nursery = bank.who(tx.mcc == "8351")
    _clearly_more(nursery, bank.with_event("new_baby", -60, 0), others, at_least=0.1)


def test_marriage_wedding_costs_and_shared_money(bank: Bank) -> None:
    tx, others = bank.tx, bank.without("marriage")
    weddings = bank.with_event("marriage", 40, DAYS + 30)
    for mcc in ("7299", "5811", "5621"):
        _clearly_more(bank.who(tx.mcc == mcc), weddings, others, at_least=0.3)
    shared = tx.description.str.startswith("JOINT ACCOUNT") | tx.description.str.startswith("FROM PARTNER")
    _clearly_more(_first_seen_late(tx, shared, 20), bank.with_event("marriage", -30, DAYS - 70), others)


def test_new_job_new_employer_and_payday(bank: Bank) -> None:
    tx, others = bank.tx, bank.without("new_job")
    salary = tx[tx.channel == "salary"]
    employers = salary.groupby("customer_id").counterparty_id.nunique()
    _clearly_more(set(employers.index[employers >= 2]), bank.with_event("new_job", 30, DAYS - 45), others)
    # the old employer stops paying: the first employer's last pay comes before the last pay from the new one
    movers = set(employers.index[employers >= 2]) & bank.with_event("new_job", 30, DAYS - 45)
    s = salary[salary.customer_id.isin(movers)].sort_values("date")
    first_employer = s.groupby("customer_id").counterparty_id.first()
    old = s[s.counterparty_id == s.customer_id.map(first_employer)].groupby("customer_id").date.max()
    new = s[s.counterparty_id != s.customer_id.map(first_employer)].groupby("customer_id").date.min()
    assert (old <= new.reindex(old.index) + pd.Timedelta(days=3)).mean() > 0.9


def test_job_loss_salary_stops_benefits_and_cash(bank: Bank) -> None:
    tx = bank.tx
    losers = bank.with_event("job_loss", 10, DAYS - 60) - bank.with_event("new_job")
    employed = set(bank.customers.customer_id[bank.customers.archetype.isin(["salaried", "hourly"])])
    others = (employed & bank.without("job_loss", "new_job", "retirement"))
    last_pay = tx[tx.channel == "salary"].groupby("customer_id").date.max()
    stopped = set(last_pay.index[last_pay < pd.Timestamp(END - dt.timedelta(days=45))])
    _clearly_more(stopped, losers, others, at_least=0.8)
    _clearly_more(_first_seen_late(tx, tx.description == "DWP UC", 30), losers, others)
    atm = tx[tx.mcc.eq("6011") & tx.country.eq("GB")].groupby("customer_id").size()
    per_customer = lambda group: atm.reindex(list(group)).fillna(0).mean()  # noqa: E731
    assert per_customer(losers) > 2 * per_customer(others)


def test_retirement_salary_turns_into_pension(bank: Bank) -> None:
    tx = bank.tx
    retirees = bank.with_event("retirement", 0, DAYS - 60)
    employed = set(bank.customers.customer_id[bank.customers.archetype.isin(["salaried", "hourly"])])
    others = employed - bank.with_event("retirement")
    pension = tx.description.str.contains("PENSION PAYMENT") | tx.description.eq("DWP STATE PENSION")
    _clearly_more(_first_seen_late(tx, pension, 20), retirees, others, at_least=0.8)


def test_travel_abroad_flights_hotels_and_spending_abroad(bank: Bank) -> None:
    tx, others = bank.tx, bank.without("travel_abroad")
    trips = bank.with_event("travel_abroad", 0, DAYS - 15)
    abroad = tx.country.ne("GB") & tx.currency.ne("GBP") & tx.mcc.ne("5964")
    _clearly_more(bank.who(abroad), trips, others, at_least=0.8, factor=20)
    _clearly_more(bank.who(tx.mcc == "4511"), bank.with_event("travel_abroad", 20, DAYS + 30), others)
    _clearly_more(bank.who(tx.mcc == "7011"), bank.with_event("travel_abroad", 20, DAYS + 30), others)


SIGNS = {  # look-alike kind -> the landing postings that show it on its day
    "large_purchase": lambda tx: tx.mcc.isin(["5712", "5722", "5732"]) & (tx.amount <= -100),
    "foreign_online": lambda tx: tx.mcc.eq("5964") & tx.currency.ne("GBP") & tx.country.ne("GB"),
    "baby_gift": lambda tx: tx.mcc.eq("5641"),
    "jewellery_gift": lambda tx: tx.mcc.eq("5944"),
    "bonus": lambda tx: tx.channel.eq("salary"),
}


def test_lookalikes_are_recorded_and_seen_in_the_landing_data(bank: Bank) -> None:
    look, tx = bank.lookalikes, bank.tx
    assert list(look.columns[:3]) == ["customer_id", "lookalike_of", "day"]
    assert set(look.kind) == {*SIGNS, "late_salary", "missed_salary"}
    assert (look.day <= pd.Timestamp(END)).all()
    # recorded only for customers without a true event of the type they mimic
    true = set(zip(bank.events.customer_id, bank.events.event_type))
    assert not any((c, of) in true for c, of in zip(look.customer_id, look.lookalike_of))
    for kind, sign in SIGNS.items():
        rows = look[look.kind == kind]
        seen = set(zip(tx.customer_id[sign(tx)], tx.date[sign(tx)]))
        share = sum((c, d) in seen for c, d in zip(rows.customer_id, rows.day)) / len(rows)
        assert len(rows) >= 10 and share > 0.9, (kind, len(rows), share)
    # a late or missed salary: nothing on the day it was due; a late one comes within ten days
    salary = tx[tx.channel == "salary"]
    paid = set(zip(salary.customer_id, salary.date))
    for kind in ("late_salary", "missed_salary"):
        rows = look[(look.kind == kind) & (look.day <= pd.Timestamp(END - dt.timedelta(days=12)))]
        assert len(rows) >= 5, kind
        assert not any((c, d) in paid for c, d in zip(rows.customer_id, rows.day)), kind
    rows = look[(look.kind == "late_salary") & (look.day <= pd.Timestamp(END - dt.timedelta(days=12)))]
    late = [any((c, d + pd.Timedelta(days=k)) in paid for k in range(2, 10)) for c, d in zip(rows.customer_id, rows.day)]
    assert sum(late) / len(late) > 0.9
    # the look-alikes are realistic in number: a few per hundred customers, each kind
    assert 0.05 < look.customer_id.nunique() / len(bank.all) < 0.5


def test_declarations_stay_partial_and_often_late(bank: Bank) -> None:
    truth, declared = bank.events, bank.declared
    keys = set(zip(declared.customer_id, declared.event_type, declared.event_date))
    true_keys = set(zip(truth.customer_id, truth.event_type, truth.event_date.dt.strftime("%Y-%m-%d")))
    assert keys and keys <= true_keys
    assert 0.15 < len(keys) / len(true_keys) < 0.5
    told = truth[truth.declared]
    assert (pd.to_datetime(told.declared_date) <= pd.Timestamp(END)).all()
    late = told[told.event_type != "travel_abroad"]
    assert (pd.to_datetime(late.declared_date) > late.event_date).mean() > 0.4
    trips = told[told.event_type == "travel_abroad"]
    assert (pd.to_datetime(trips.declared_date) < trips.event_date).all()
