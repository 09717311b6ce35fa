"""Scheduled money: incomes, rent or mortgage, bills by direct debit, transfers to savings, and how life events
change them (a job loss stops the salary and may start Universal Credit, a new job brings a new employer and
payday, retirement turns salary into pension, a move changes rent and utilities, a purchase ends rent and starts
a mortgage). Also which accounts each customer holds, and when they open.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import CARD, LOAN, MORTGAGE, REGIONS, SAVINGS, catalog, employer_names
from pipelines.sources.simulate.ledger import PostingBuffer
from pipelines.sources.simulate.lifeevents import (BABY, BONUS, BUYING, JOB_LOSS, LATE_SALARY, MARRIAGE, MISSED_SALARY, MOVING,
                                          NEW_JOB, RETIREMENT, Events, Lookalikes)
from pipelines.sources.simulate.population import (BENEFITS, FAMILY, FREELANCER, HOURLY, MORTGAGED, RENTER, RETIRED,
                                           SALARIED, STUDENT, Population)
from pipelines.sources.simulate import schedules

NEVER = 10**9


@dataclass
class Products:
    """Accounts per customer and slot (current, savings, credit_card, loan, mortgage)."""

    held: np.ndarray              # (5, n) bool
    open_day: np.ndarray          # (5, n) day index of opened_on (NEVER if not held)
    close_day: np.ndarray         # (5, n) day index of closed_on (NEVER if open), set by the daily run
    mortgage_payment: np.ndarray  # monthly payment to a mortgage held here, pence
    buy_day: np.ndarray           # completion day of a home purchase (NEVER if none)
    principal: np.ndarray         # new mortgage advanced at completion, pence (0 when the lender is elsewhere)


def event_days(events: Events, kind: int, n: int) -> np.ndarray:
    """Day of the customer's (first) event of a kind, NEVER if none."""
    cust, day = events.of(kind)
    first = np.full(n, NEVER, dtype=np.int64)
    np.minimum.at(first, cust, day)
    return first


def open_products(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events) -> Products:
    """Which accounts exist and when they open; buyers get a savings account to save the deposit in, and half of
    them take their new mortgage with this bank."""
    n = pop.n
    held = np.zeros((5, n), dtype=bool)
    held[0] = True
    held[SAVINGS] = pop.has_savings
    held[CARD] = pop.has_card
    held[LOAN] = pop.has_loan
    held[MORTGAGE] = pop.mortgage_internal
    open_day = np.where(held, pop.since_day[None, :], NEVER).astype(np.int64)
    before = pop.since_day < 0
    # accounts of long-standing customers were opened some time between customer_since and the window start
    for slot in (SAVINGS, CARD, LOAN):
        later = before & held[slot] & (rng.random(n) < 0.6)
        open_day[slot, later] = pop.since_day[later] + (rng.random(int(later.sum())) *
                                                        (-pop.since_day[later])).astype(np.int64)
    buy_day = event_days(events, BUYING, n)
    buyer = buy_day < NEVER
    new_savings = buyer & ~held[SAVINGS]
    held[SAVINGS] |= buyer
    open_day[SAVINGS, new_savings] = np.maximum(pop.since_day[new_savings], buy_day[new_savings] - 300)
    internal = buyer & (rng.random(n) < 0.5) & (buy_day < cal.n_days)
    held[MORTGAGE] |= internal
    open_day[MORTGAGE, internal] = buy_day[internal]
    new_cost = np.where(buyer, np.round(np.maximum(pop.housing_cost, pop.income * 0.25) *
                                        rng.uniform(0.9, 1.4, n) / 100) * 100, 0).astype(np.int64)
    mortgage_payment = np.where(pop.mortgage_internal, pop.housing_cost, np.where(internal, new_cost, 0))
    principal = np.where(internal, new_cost * rng.integers(150, 300, n), 0).astype(np.int64)
    return Products(held=held, open_day=open_day, close_day=np.full((5, n), NEVER, dtype=np.int64),
                    mortgage_payment=mortgage_payment.astype(np.int64), buy_day=buy_day, principal=principal)


def add_incomes(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events, lookalikes: Lookalikes,
                buf: PostingBuffer) -> None:
    """Salaries, weekly wages, freelance invoices, pensions and benefits, with the changes life events bring, and
    the income look-alikes of steady employees (a one-off bonus, a salary paid late, a month missed and made up)."""
    cat = catalog()
    n = pop.n
    n_emp = len(employer_names())
    year = cal.end_date.year
    age = pop.age_at(year)
    loss = event_days(events, JOB_LOSS, n)
    new_job = event_days(events, NEW_JOB, n)
    retire = event_days(events, RETIREMENT, n)
    employed = (pop.archetype == SALARIED) | (pop.archetype == HOURLY)
    base_end = np.minimum.reduce([np.where(loss < NEVER, loss + 1, NEVER), new_job,
                                  np.where(retire < NEVER, retire + 1, NEVER)])
    base_end = np.where(employed, base_end, NEVER)
    lo = np.full(n, -NEVER)
    salary_sec = rng.integers(1 * 3600, 6 * 3600, n) + 3600        # 02:00-07:00, after the clock-change hour

    def pay_monthly(cust: np.ndarray, rule: np.ndarray, start: np.ndarray, end: np.ndarray, amount: np.ndarray,
                    label: int) -> None:
        """amount: per customer of the chunk; rule, start, end: per entry of cust."""
        rows, day = schedules.monthly(cal, rule, start, end)
        who = cust[rows]
        buf.add(who, day, amount[who], label, salary_sec[who])

    # monthly salary, overtime making a fifth of them vary
    sal = np.flatnonzero(pop.archetype == SALARIED)
    variable = np.where(rng.random(n) < 0.2, 0.08, 0.0)
    rows, day = schedules.monthly(cal, pop.payday_rule[sal], lo[sal], base_end[sal])
    c = sal[rows]
    pay = np.round(pop.income[c] * (1 + variable[c] * rng.normal(0, 1, len(c)))).astype(np.int64)
    day, pay = _irregular_pay(rng, lookalikes, n, c, day, pay)
    buf.add(c, day, pay, cat.group("salary")[pop.employer[c]], salary_sec[c])
    # look-alike of a new job: a one-off bonus from the same employer, on a day of its own
    c, day = lookalikes.of(BONUS)
    buf.add(c, day, np.round(pop.income[c] * rng.uniform(0.3, 1.5, len(c))).astype(np.int64),
            cat.group("salary")[pop.employer[c]], salary_sec[c])
    # weekly wages that vary with hours worked
    hourly = np.flatnonzero(pop.archetype == HOURLY)
    rows, day = schedules.weekly(cal, pop.pay_weekday[hourly], lo[hourly], base_end[hourly])
    c = hourly[rows]
    wage = pop.income[c] * 12 / 52 * np.clip(rng.normal(1, 0.12, len(c)), 0.5, 1.5)
    buf.add(c, day, np.round(wage).astype(np.int64), cat.group("wages")[pop.employer[c]], salary_sec[c])
    # freelance: irregular invoices, some months nothing
    free = np.flatnonzero(pop.archetype == FREELANCER)
    counts = rng.poisson(np.full((len(free), cal.n_days), 1.6 / 30.44))
    flat = np.repeat(np.arange(len(free) * cal.n_days), counts.ravel())
    c, day = free[flat // cal.n_days], flat % cal.n_days
    invoice = pop.income[c] / 1.6 * rng.lognormal(-0.35 ** 2 / 2 - 0.05, 0.6, len(c))
    buf.add(c, day, np.round(invoice).astype(np.int64), _choose(rng, cat.group("freelance"), c),
            rng.integers(9 * 3600, 17 * 3600, len(c)))
    # retired: state pension every four weeks from 66, a private pension monthly
    ret = np.flatnonzero(pop.archetype == RETIRED)
    _pensions(rng, cal, pop, ret, np.full(len(ret), -NEVER), pop.income[ret], buf, salary_sec)
    # benefits: Universal Credit monthly
    ben = np.flatnonzero(pop.archetype == BENEFITS)
    uc_rule = rng.integers(1, 29, n)
    pay_monthly(ben, uc_rule[ben], lo[ben], np.full(len(ben), NEVER), pop.income, cat.one("universal_credit"))
    # students: maintenance loan instalments in September, January and April, and a small weekly job
    stu = np.flatnonzero(pop.archetype == STUDENT)
    instalments = [cal.index_of(cal.start_date.replace(year=y, month=m, day=d))
                   for y in (year - 1, year, year + 1) for m, d in ((9, 23), (1, 12), (4, 21))]
    for day in instalments:
        buf.add(stu, day, pop.income[stu] * 3, cat.one("student_loan"), salary_sec[stu])
    rows, day = schedules.weekly(cal, pop.pay_weekday[stu], lo[stu], np.full(len(stu), NEVER))
    job = stu[rows]
    buf.add(job, day, np.round(pop.income[job] * 0.3 * 12 / 52 * rng.uniform(0.5, 1.5, len(job))).astype(np.int64),
            cat.group("wages")[pop.employer[job]], salary_sec[job])
    # child benefit for families
    kids = np.flatnonzero(pop.has_children)
    rows, day = schedules.periodic(cal, rng.integers(0, 28, len(kids)), 28, lo[kids], np.full(len(kids), NEVER))
    buf.add(kids[rows], day, 10_420, cat.one("child_benefit"), salary_sec[kids[rows]])

    # --- life events ---
    # job loss: a last pay and sometimes redundancy pay on the day; Universal Credit for many after five weeks
    lost = np.flatnonzero(employed & (loss < NEVER))
    buf.add(lost, loss[lost], np.round(pop.income[lost] * rng.uniform(0.3, 1.0, len(lost))).astype(np.int64),
            cat.group("salary")[pop.employer[lost]], salary_sec[lost])
    redundant = lost[rng.random(len(lost)) < 0.4]
    buf.add(redundant, loss[redundant], np.round(pop.income[redundant] * rng.uniform(1, 3, len(redundant))
                                                 ).astype(np.int64),
            cat.group("redundancy")[pop.employer[redundant]], salary_sec[redundant])
    claims = lost[rng.random(len(lost)) < 0.6]
    uc_amount = np.clip(pop.income * rng.uniform(0.3, 0.45, n), 40_000, 120_000).astype(np.int64)
    pay_monthly(claims, uc_rule[claims], loss[claims] + 35, new_job[claims], uc_amount, cat.one("universal_credit"))
    # new job: a new employer, a new payday, usually more money; first pay a few weeks in
    hired = np.flatnonzero(employed & (new_job < NEVER) & (retire == NEVER))
    employer = (pop.employer[hired] + rng.integers(1, n_emp, len(hired))) % n_emp
    rules = np.array([0, 1, 15, 20, 25, 28])
    rule = np.where(rng.random(len(hired)) < 0.45, 0, rng.choice(rules[1:], len(hired)))
    # a new employer pays on another day than the old one
    same = (rule == pop.payday_rule[hired]) & (pop.archetype[hired] == SALARIED)
    rule = np.where(same, rules[(np.searchsorted(rules, rule) + rng.integers(1, len(rules), len(hired))) % len(rules)],
                    rule)
    amount = np.round(pop.income[hired] * rng.uniform(0.95, 1.3, len(hired))).astype(np.int64)
    rows, day = schedules.monthly(cal, rule, new_job[hired] + 12, np.full(len(hired), NEVER))
    c = hired[rows]
    buf.add(c, day, amount[rows], cat.group("salary")[employer[rows]], salary_sec[c])
    # retirement: the salary stops, pensions start about a month later
    retired = np.flatnonzero(employed & (retire < NEVER))
    _pensions(rng, cal, pop, retired, retire[retired] + rng.integers(20, 40, len(retired)),
              np.round(pop.income[retired] * rng.uniform(0.45, 0.7, len(retired))).astype(np.int64), buf, salary_sec)
    # a baby: child benefit from a few weeks after the birth
    cust, day = events.of(BABY)
    claim = rng.random(len(cust)) < 0.85                      # high earners often do not claim
    cust, day = cust[claim], day[claim]
    start = day + rng.integers(21, 56, len(cust))
    rows, pay_day = schedules.periodic(cal, start, 28, start, np.full(len(cust), NEVER))
    buf.add(cust[rows], pay_day, 10_420, cat.one("child_benefit"), salary_sec[cust[rows]])


def _irregular_pay(rng: np.random.Generator, lookalikes: Lookalikes, n: int, cust: np.ndarray, day: np.ndarray,
                   pay: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Look-alikes of a job loss among monthly salaries (rows: cust, day, pay): the first payday on or after the
    look-alike day comes 2-9 days late, or is missed and paid with the next month's salary."""
    day, pay = day.copy(), pay.copy()
    for kind in (LATE_SALARY, MISSED_SALARY):
        who, when = lookalikes.of(kind)
        due = np.full(n, NEVER, dtype=np.int64)
        due[who] = when
        after = day >= due[cust]
        first = np.full(n, NEVER, dtype=np.int64)
        np.minimum.at(first, cust[after], day[after])
        hit = after & (day == first[cust])
        # the truth keeps the day the pay was due (NEVER, i.e. not written, if no payday is left in the window)
        lookalikes.day[lookalikes.kind == kind] = first[who]
        if kind == LATE_SALARY:
            day[hit] += rng.integers(2, 10, int(hit.sum()))
            continue
        later = day > first[cust]
        second = np.full(n, NEVER, dtype=np.int64)
        np.minimum.at(second, cust[later], day[later])
        owed = np.zeros(n, dtype=np.int64)
        owed[cust[hit]] = pay[hit]
        make_up = later & (day == second[cust])
        pay[make_up] += owed[cust[make_up]]
        pay[hit] = 0                                          # dropped by the buffer (no zero postings)
    return day, pay


def _pensions(rng: np.random.Generator, cal: SimCalendar, pop: Population, cust: np.ndarray, start: np.ndarray,
              total: np.ndarray, buf: PostingBuffer, salary_sec: np.ndarray) -> None:
    """Split a monthly retirement income into the state pension (four-weekly, from 66) and a private pension."""
    cat = catalog()
    age = pop.age_at(cal.end_date.year)[cust]
    state = np.where(age >= 66, np.minimum(np.round(total * 0.6), 88_000), 0).astype(np.int64)
    rows, day = schedules.periodic(cal, start + rng.integers(0, 28, len(cust)), 28, start, np.full(len(cust), NEVER))
    buf.add(cust[rows], day, state[rows], cat.one("state_pension"), salary_sec[cust[rows]])
    private = np.maximum(0, total - np.round(state * 13 / 12)).astype(np.int64)
    rows, day = schedules.monthly(cal, rng.integers(1, 29, len(cust)), start, np.full(len(cust), NEVER))
    buf.add(cust[rows], day, private[rows], _choose(rng, cat.group("pension"), cust)[rows], salary_sec[cust[rows]])


def _choose(rng: np.random.Generator, labels: np.ndarray, cust: np.ndarray) -> np.ndarray:
    """A label per row, the same for a customer every time (their landlord, their pension provider)."""
    salt = rng.integers(0, 1 << 30)
    return labels[(cust * 2654435761 + salt) % len(labels)]


def add_housing(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events, products: Products,
                buf: PostingBuffer) -> None:
    """Rent by standing order, mortgages by direct debit, and what moving or buying does to them."""
    cat = catalog()
    n = pop.n
    move = event_days(events, MOVING, n)
    buy = products.buy_day
    rule = rng.integers(1, 29, n)
    sec = rng.integers(3 * 3600, 6 * 3600, n)
    renter = pop.tenure == RENTER
    agent = rng.integers(0, len(cat.group("rent")), n)
    rent_end = np.minimum(move, buy)
    c = np.flatnonzero(renter)
    rows, day = schedules.monthly(cal, rule[c], np.full(len(c), -NEVER), rent_end[c], bills=True)
    buf.add(c[rows], day, -pop.housing_cost[c[rows]], cat.group("rent")[agent[c[rows]]], sec[c[rows]])
    # a move: a deposit to the new agent, rent at the new place from the move on
    movers = np.flatnonzero((move < NEVER) & ((pop.tenure == RENTER) | (pop.tenure == FAMILY)))
    new_rent = np.where(renter[movers], pop.housing_cost[movers] * rng.uniform(0.85, 1.3, len(movers)),
                        pop.income[movers] * rng.uniform(0.25, 0.38, len(movers)))
    new_rent = (np.round(new_rent / 100) * 100).astype(np.int64)
    new_agent = rng.integers(0, len(cat.group("rent")), len(movers))
    buf.add(movers, move[movers] - rng.integers(3, 20, len(movers)), -np.round(new_rent * 1.15).astype(np.int64),
            cat.group("tenancy_deposit")[new_agent], rng.integers(9 * 3600, 17 * 3600, len(movers)))
    new_rule = np.clip(cal.day_of_month(move[movers]), 1, 28)
    rows, day = schedules.monthly(cal, new_rule, move[movers], buy[movers], bills=True)
    buf.add(movers[rows], day, -new_rent[rows], cat.group("rent")[new_agent[rows]], sec[movers[rows]])
    # mortgages: at this bank the payment is a transfer handled by the daily run; elsewhere a direct debit
    lender = rng.integers(0, len(cat.group("mortgage_external")), n)
    ext = np.flatnonzero((pop.tenure == MORTGAGED) & ~pop.mortgage_internal)
    rows, day = schedules.monthly(cal, rule[ext], np.full(len(ext), -NEVER), np.full(len(ext), NEVER), bills=True)
    buf.add(ext[rows], day, -pop.housing_cost[ext[rows]], cat.group("mortgage_external")[lender[ext[rows]]],
            sec[ext[rows]])
    # buying: solicitor's fee before completion; after it a mortgage elsewhere, or here (advance on completion)
    buyers = np.flatnonzero(buy < NEVER)
    solicitor = np.arange(n) % len(cat.group("solicitor_fee"))     # the same firm as the completion (daily run)
    buf.add(buyers, buy[buyers] - rng.integers(5, 40, len(buyers)),
            -np.round(rng.uniform(900, 2200, len(buyers)) * 100).astype(np.int64),
            cat.group("solicitor_fee")[solicitor[buyers]], rng.integers(9 * 3600, 17 * 3600, len(buyers)))
    internal = products.principal > 0
    here = np.flatnonzero(internal)
    buf.add(here, buy[here], -products.principal[here], cat.group("mortgage_advance")[solicitor[here]], 10 * 3600,
            slot=MORTGAGE)
    elsewhere = np.flatnonzero((buy < NEVER) & ~internal)
    cost = np.round(np.maximum(pop.housing_cost, pop.income * 0.25) * rng.uniform(0.9, 1.4, n) / 100) * 100
    rows, day = schedules.monthly(cal, rule[elsewhere], buy[elsewhere] + 20, np.full(len(elsewhere), NEVER), bills=True)
    buf.add(elsewhere[rows], day, -cost[elsewhere[rows]].astype(np.int64),
            cat.group("mortgage_external")[lender[elsewhere[rows]]], sec[elsewhere[rows]])


def add_bills(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events, products: Products,
              new_region: np.ndarray, buf: PostingBuffer) -> np.ndarray:
    """Direct debits for council tax, energy, water, phone, broadband, gym, insurance, TV licence and nursery.
    A move switches council (of the new region, if it changed) and utilities; someone leaving the family home starts
    their own. Returns the monthly total per customer (pence) for budgeting."""
    cat = catalog()
    n = pop.n
    move = np.minimum(event_days(events, MOVING, n), products.buy_day)
    household = pop.tenure != FAMILY
    own_home_after = household | (move < NEVER)
    monthly_total = np.zeros(n)
    specs = [  # group, share of customers, low, high (GBP a month), household only
        ("energy", 0.97, 60, 170, True), ("water", 0.95, 25, 55, True), ("phone", 0.95, 10, 45, False),
        ("broadband", 0.75, 25, 55, True), ("gym", 0.25, 20, 60, False), ("insurance", 0.55, 15, 70, False),
        ("tv_licence", 0.6, 14.13, 14.13, True),
    ]
    for group, share, low, high, household_only in specs:
        has = (rng.random(n) < share) & (household | (not household_only))
        amount = (np.round(rng.uniform(low, high, n) * 100)).astype(np.int64)
        monthly_total += np.where(has, amount, 0)
        switches = group in ("energy", "water", "broadband")
        labels = cat.group(group)
        first = rng.integers(0, len(labels), n)
        second = (first + rng.integers(1, len(labels), n)) % len(labels) if len(labels) > 1 else first
        rule = rng.integers(1, 29, n)
        c = np.flatnonzero(has)
        end = np.where(switches, move[c], NEVER)
        rows, day = schedules.monthly(cal, rule[c], np.full(len(c), -NEVER), end, bills=True)
        buf.add(c[rows], day, -amount[c[rows]], labels[first[c[rows]]], rng.integers(3 * 3600, 7 * 3600, len(rows)))
        if switches:
            # after a move: a new supplier, and a first one for those who lived with family
            leaving = (rng.random(n) < share) & ~household & own_home_after
            m = np.flatnonzero((has & (move < NEVER)) | leaving)
            rows, day = schedules.monthly(cal, rule[m], move[m] + 10, np.full(len(m), NEVER), bills=True)
            new_amount = np.round(amount[m] * rng.uniform(0.8, 1.3, len(m))).astype(np.int64)
            buf.add(m[rows], day, -new_amount[rows], labels[second[m[rows]]],
                    rng.integers(3 * 3600, 7 * 3600, len(rows)))
    # council tax: by region; a move restarts it with the (possibly new) council
    payer = np.flatnonzero(household & (pop.archetype != STUDENT))
    tax = np.round(rng.uniform(95, 230, n) * 100).astype(np.int64)
    monthly_total[payer] += tax[payer]
    councils = np.array([[cat.group(f"council:{region}")[i % len(cat.group(f"council:{region}"))]
                          for i in range(4)] for region in REGIONS])
    council = councils[pop.region, rng.integers(0, 4, n)]
    # after a move: a council of the new region, another one than before (a new council tax account)
    candidates = councils[new_region[:, None], (rng.integers(0, 4, n)[:, None] + np.arange(4)[None, :]) % 4]
    other = candidates != council[:, None]
    new_council = candidates[np.arange(n), np.where(other.any(axis=1), other.argmax(axis=1), 0)]
    rule = rng.integers(1, 29, n)
    rows, day = schedules.monthly(cal, rule[payer], np.full(len(payer), -NEVER), move[payer] + 1, bills=True)
    buf.add(payer[rows], day, -tax[payer[rows]], council[payer[rows]], 4 * 3600)
    m = np.flatnonzero(own_home_after & (move < NEVER) & (pop.archetype != STUDENT))
    rows, day = schedules.monthly(cal, rule[m], move[m] + 20, np.full(len(m), NEVER), bills=True)
    buf.add(m[rows], day, -np.round(tax[m[rows]] * 1.1).astype(np.int64), new_council[m[rows]], 4 * 3600)
    # nursery fees for half the new parents, some months after the birth; and for a few families already
    nursery = cat.group("nursery")
    cust, day = events.of(BABY)
    pays = rng.random(len(cust)) < 0.55
    cust, day = cust[pays], day[pays]
    start = day + rng.integers(120, 300, len(cust))
    fee = np.round(rng.uniform(600, 1200, len(cust)) * 100).astype(np.int64)
    rows, pay_day = schedules.monthly(cal, rng.integers(1, 29, len(cust)), start, np.full(len(cust), NEVER), bills=True)
    buf.add(cust[rows], pay_day, -fee[rows], _choose(rng, nursery, cust)[rows], 5 * 3600)
    older = np.flatnonzero(pop.has_children & (rng.random(n) < 0.06))
    fee = np.round(rng.uniform(400, 1000, n) * 100).astype(np.int64)
    monthly_total[older] += fee[older]
    rows, pay_day = schedules.monthly(cal, rng.integers(1, 29, len(older)), np.full(len(older), -NEVER),
                                      np.full(len(older), NEVER), bills=True)
    buf.add(older[rows], pay_day, -fee[older[rows]], _choose(rng, nursery, older)[rows], 5 * 3600)
    return monthly_total


def add_partner_transfers(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events,
                          buf: PostingBuffer) -> np.ndarray:
    """Couples share money: after a wedding half the newly-weds start a monthly standing order to a joint account
    and a fifth receive a monthly transfer from their partner; some couples already do either (noise). Returns the
    monthly amount of the standing orders that run all window long (for budgeting)."""
    cat = catalog()
    n = pop.n
    joint, partner = cat.group("joint_account"), cat.group("partner_in")
    bank = rng.integers(0, len(joint), n)
    amount = (np.round(pop.income * rng.uniform(0.06, 0.14, n) / 1000) * 1000).astype(np.int64)
    rule = rng.integers(1, 29, n)
    sec = rng.integers(6 * 3600, 9 * 3600, n)
    cust, day = events.of(MARRIAGE)
    how = rng.random(len(cust))
    for who, start, label, sign in ((cust[how < 0.5], day[how < 0.5], joint, -1),
                                    (cust[how > 0.8], day[how > 0.8], partner, 1)):
        start = start + rng.integers(10, 60, len(who))
        rows, pay_day = schedules.monthly(cal, rule[who], start, np.full(len(who), NEVER), bills=True)
        buf.add(who[rows], pay_day, sign * amount[who[rows]], label[bank[who[rows]]], sec[who[rows]])
    married = np.zeros(n, dtype=bool)
    married[cust] = True
    adult = pop.age_at(cal.end_date.year) >= 25
    couple = ~married & adult & (rng.random(n) < 0.08)
    how = rng.random(n)
    monthly = np.zeros(n, dtype=np.int64)
    for who, label, sign in ((np.flatnonzero(couple & (how < 0.6)), joint, -1),
                             (np.flatnonzero(couple & (how >= 0.6)), partner, 1)):
        rows, pay_day = schedules.monthly(cal, rule[who], np.full(len(who), -NEVER), np.full(len(who), NEVER),
                                          bills=True)
        buf.add(who[rows], pay_day, sign * amount[who[rows]], label[bank[who[rows]]], sec[who[rows]])
        if sign < 0:
            monthly[who] = amount[who]
    return monthly


def add_savings_transfers(rng: np.random.Generator, pop: Population, cal: SimCalendar, products: Products,
                          buf: PostingBuffer) -> None:
    """Regular standing transfers to savings, and the extra saving of a deposit before buying a home."""
    cat = catalog()
    n = pop.n
    rule = np.clip(np.where(pop.payday_rule == 0, 1, pop.payday_rule + 1), 1, 28)
    savers = np.flatnonzero(pop.saver_amount > 0)
    rows, day = schedules.monthly(cal, rule[savers], np.full(len(savers), -NEVER), products.buy_day[savers],
                                  bills=True)
    _transfer_pair(buf, savers[rows], day, pop.saver_amount[savers[rows]], 7 * 3600)
    buyers = np.flatnonzero(products.buy_day < NEVER)
    start = products.buy_day[buyers] - rng.integers(150, 300, len(buyers))
    extra = np.round(pop.income[buyers] * rng.uniform(0.1, 0.25, len(buyers)) / 1000).astype(np.int64) * 1000
    rows, day = schedules.monthly(cal, rule[buyers], start, products.buy_day[buyers], bills=True)
    _transfer_pair(buf, buyers[rows], day, extra[rows], 7 * 3600 + 60)


def _transfer_pair(buf: PostingBuffer, cust: np.ndarray, day: np.ndarray, amount: np.ndarray, sec: int) -> None:
    """Current account to savings: two postings on the same day, one on each account."""
    cat = catalog()
    ok = day >= buf.open_day[SAVINGS, cust]
    buf.add(cust[ok], day[ok], -amount[ok], cat.one("to_savings"), sec, slot=0)
    buf.add(cust[ok], day[ok], amount[ok], cat.one("from_current"), sec, slot=SAVINGS)
