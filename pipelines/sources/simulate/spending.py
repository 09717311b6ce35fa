"""Card spending by merchant category, cash, gambling, unexpected bills, and the spending that life events cause.

Counts are Poisson per customer and day with a weekly profile (weekend peaks for groceries, restaurants and
bars; weekday peaks for commuting) and the yearly season of calendar.season (December peak). Amounts are
log-normal around the customer's budget for the category, so that a month's spending matches their habits.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import (CARD, COUNTRIES, CURRENCIES, DESTINATIONS, FOREIGN_SHOPS, FX_RATE_MICROS,
                                       catalog)
from pipelines.sources.simulate.ledger import DISCRETIONARY, ESSENTIAL, FIXED, PostingBuffer
from pipelines.sources.simulate.lifeevents import (BABY, BABY_GIFT, BUYING, FOREIGN_ONLINE,
                                          JEWELLERY_GIFT, JOB_LOSS, LARGE_PURCHASE, MARRIAGE, MOVING, TRAVEL, Events,
                                          Lookalikes)
from pipelines.sources.simulate.population import Population

WEEKEND = (0.85, 0.85, 0.9, 1.0, 1.25, 1.45, 0.9)
NIGHTS_OUT = (0.5, 0.6, 0.8, 1.0, 1.8, 2.0, 0.8)
COMMUTE = (1.35, 1.35, 1.35, 1.3, 1.2, 0.3, 0.15)
ONLINE = (1.2, 1.0, 1.0, 1.0, 0.9, 0.8, 1.3)
FLAT = (1.0,) * 7


@dataclass(frozen=True)
class Category:
    name: str
    per_month: float        # purchases a month for a typical customer
    share: float            # share of the discretionary budget
    sigma: float            # log-spread of one purchase
    weekly: tuple[float, ...]
    hour: float
    kind: int
    festive: float = 1.0    # exponent on the seasonal factor (gifts peak harder in December)


CATEGORIES = [
    Category("groceries", 9.0, 0.30, 0.55, WEEKEND, 13.0, ESSENTIAL),
    Category("convenience", 4.0, 0.04, 0.5, FLAT, 17.0, ESSENTIAL),
    Category("restaurants", 2.5, 0.08, 0.5, NIGHTS_OUT, 19.5, DISCRETIONARY),
    Category("fast_food", 5.0, 0.05, 0.5, FLAT, 12.5, DISCRETIONARY),
    Category("bars", 2.0, 0.05, 0.5, NIGHTS_OUT, 20.5, DISCRETIONARY),
    Category("fuel", 3.0, 0.09, 0.3, FLAT, 12.0, ESSENTIAL),
    Category("transport", 10.0, 0.06, 0.35, COMMUTE, 8.0, ESSENTIAL),
    Category("taxi", 1.0, 0.02, 0.5, NIGHTS_OUT, 22.0, DISCRETIONARY),
    Category("clothing", 1.2, 0.07, 0.6, WEEKEND, 14.0, DISCRETIONARY, 1.8),
    Category("online", 3.0, 0.09, 0.7, ONLINE, 20.0, DISCRETIONARY, 1.8),
    Category("pharmacy", 1.5, 0.03, 0.5, FLAT, 12.0, ESSENTIAL),
    Category("entertainment", 0.6, 0.02, 0.4, WEEKEND, 19.0, DISCRETIONARY),
    Category("home_diy", 0.7, 0.04, 0.7, WEEKEND, 11.0, DISCRETIONARY),
    Category("electronics", 0.3, 0.04, 0.8, WEEKEND, 15.0, DISCRETIONARY, 2.5),
    Category("beauty", 0.8, 0.03, 0.4, WEEKEND, 11.0, DISCRETIONARY),
    Category("department", 0.8, 0.04, 0.6, WEEKEND, 14.0, DISCRETIONARY, 2.5),
]


def _seconds(rng: np.random.Generator, hour: float | np.ndarray, spread: float, size: int) -> np.ndarray:
    """Local time of day in seconds, kept between 02:00 and 23:59 (no postings in the clock-change hour)."""
    return np.clip(rng.normal(hour, spread, size) * 3600, 2 * 3600, 86_399).astype(np.int32)


def _pick(rng: np.random.Generator, labels: np.ndarray, size: int, affinity: np.ndarray | None = None) -> np.ndarray:
    """A merchant per purchase; with `affinity` (one value per purchase in [0,1)) customers keep favourites."""
    if affinity is None:
        return labels[rng.integers(0, len(labels), size)]
    favourite = (affinity * len(labels)).astype(np.int64)
    other = rng.integers(0, len(labels), size)
    return labels[np.where(rng.random(size) < 0.75, favourite, other)]


def _route_card(rng: np.random.Generator, pop: Population, cust: np.ndarray, day: np.ndarray,
                open_day: np.ndarray) -> np.ndarray:
    """Put a share of card spending on the customer's credit card (slot 2), the rest on the current account."""
    on_card = pop.has_card[cust] & (day >= open_day[CARD, cust]) & (rng.random(len(cust)) < pop.card_share[cust])
    return np.where(on_card, CARD, 0).astype(np.int8)


def add_card_spending(rng: np.random.Generator, pop: Population, cal: SimCalendar, budget: np.ndarray,
                      level: np.ndarray, buf: PostingBuffer) -> None:
    """Everyday spending. budget: monthly discretionary budget per customer (pence); level: (n, days) factor
    that life events and hardship put on spending (job loss lowers it, a baby raises groceries)."""
    cat = catalog()
    n, days = pop.n, cal.n_days
    weights = np.stack([np.full(n, c.share) for c in CATEGORIES]) * rng.gamma(4.0, 0.25, (len(CATEGORIES), n))
    names = [c.name for c in CATEGORIES]
    weights[names.index("fuel")] *= pop.has_car
    weights[names.index("transport")] *= pop.commuter | (rng.random(n) < 0.3)
    weights /= weights.sum(axis=0, keepdims=True)
    affinity = rng.random((len(CATEGORIES), n))
    for k, spec in enumerate(CATEGORIES):
        freq = spec.per_month * rng.gamma(3.0, 1 / 3.0, n) * (weights[k] > 0)
        weekly = np.asarray(spec.weekly) / np.mean(spec.weekly)
        day_factor = weekly[cal.weekday] * cal.season ** spec.festive            # (days,)
        lam = (freq / 30.44)[:, None] * day_factor[None, :] * level               # (n, days)
        counts = rng.poisson(lam)
        flat = np.repeat(np.arange(n * days), counts.ravel())
        cust, day = flat // days, (flat % days).astype(np.int64)
        mean = budget[cust] * weights[k, cust] / np.maximum(freq[cust], 0.05)
        pence = -np.maximum(50, np.round(mean * rng.lognormal(-spec.sigma ** 2 / 2, spec.sigma, len(cust))))
        labels = _pick(rng, cat.group(spec.name), len(cust), affinity[k, cust])
        slot = _route_card(rng, pop, cust, day, buf.open_day)
        buf.add(cust, day, pence.astype(np.int64), labels, _seconds(rng, spec.hour, 2.5, len(cust)), slot, spec.kind)


def add_cash_and_habits(rng: np.random.Generator, pop: Population, cal: SimCalendar, buf: PostingBuffer) -> None:
    """ATM withdrawals, subscriptions paid by card, gambling, and the unexpected bills everyone gets."""
    cat = catalog()
    n, days = pop.n, cal.n_days
    # cash: half the customers, a couple of times a month, round amounts
    uses_cash = rng.random(n) < np.where(pop.age_at(cal.end_date.year) > 60, 0.7, 0.45)
    counts = rng.poisson(np.where(uses_cash, 2.2 / 30.44, 0.0)[:, None] * np.ones(days)[None, :])
    flat = np.repeat(np.arange(n * days), counts.ravel())
    cust, day = flat // days, flat % days
    amounts = rng.choice([10, 20, 20, 30, 40, 50, 50, 100, 200], len(cust)) * -100
    buf.add(cust, day, amounts, _pick(rng, cat.group("atm"), len(cust)), _seconds(rng, 14, 4, len(cust)),
            0, DISCRETIONARY)
    # streaming subscriptions: monthly card payments on the day the subscription started
    for price, share, label in zip([1099, 1199, 899, 899], [0.45, 0.35, 0.25, 0.40], cat.group("streaming")):
        subs = np.flatnonzero(rng.random(n) < share)
        rows, day = _monthly_any_day(rng, cal, len(subs))
        buf.add(subs[rows], day, -price, label, _seconds(rng, 6, 1, len(rows)))
    # gambling: frequent small stakes, not cut when money is short (that is the harm)
    gamblers = np.flatnonzero(pop.gambler)
    counts = rng.poisson(np.full((len(gamblers), days), 7 / 30.44) * cal.season[None, :] ** 0.5)
    flat = np.repeat(np.arange(len(gamblers) * days), counts.ravel())
    cust, day = gamblers[flat // days], flat % days
    stakes = -np.round(rng.lognormal(np.log(2000), 0.9, len(cust))).astype(np.int64)
    buf.add(cust, day, stakes, _pick(rng, cat.group("gambling"), len(cust)), _seconds(rng, 21, 2.5, len(cust)),
            _route_card(rng, pop, cust, day, buf.open_day), FIXED)
    # shocks: a car repair, a vet, a boiler, a broken fridge: about one every five months
    counts = rng.poisson(np.full((n, days), 1 / 150))
    flat = np.repeat(np.arange(n * days), counts.ravel())
    cust, day = flat // days, flat % days
    shock_kinds = ["car_repair", "vet", "plumbing", "appliances"]
    kinds = rng.choice(len(shock_kinds), len(cust), p=[0.4, 0.2, 0.2, 0.2])
    label = np.select([kinds == k for k in range(len(shock_kinds))],
                      [_pick(rng, cat.group(name), len(cust)) for name in shock_kinds])
    cost = -np.round(np.maximum(60, rng.lognormal(np.log(300), 0.8, len(cust))) * 100).astype(np.int64)
    buf.add(cust, day, cost, label, _seconds(rng, 13, 3, len(cust)), _route_card(rng, pop, cust, day, buf.open_day))


def _monthly_any_day(rng: np.random.Generator, cal: SimCalendar, rows: int) -> tuple[np.ndarray, np.ndarray]:
    """Monthly on a fixed day of the month that may be a weekend (card-recurring payments)."""
    anchor = rng.integers(0, 28, rows)
    months = int(np.ceil(cal.n_days / 30.44)) + 2
    first_of_month = np.array([cal.index_of(cal.start_date.replace(day=1)) + int(round(30.44 * m))
                               for m in range(months)])
    days = first_of_month[None, :] + anchor[:, None]
    mask = (days >= 0) & (days < cal.n_days)
    r, m = np.nonzero(mask)
    return r, days[r, m]


def add_life_event_spending(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events,
                            lookalikes: Lookalikes, buf: PostingBuffer) -> None:
    """What a move, a purchase, a baby, a wedding, a job loss or a trip costs, around the event date (each signal
    with its own chance, timing and amount: not every buyer pays a surveyor, not every mover hires a van), and the
    look-alikes of customers without the event (a big purchase for the home, a gift from a baby shop or a
    jeweller, an order from a shop abroad)."""
    cat = catalog()

    def one_off(cust: np.ndarray, day: np.ndarray, group: str | np.ndarray, median: float, sigma: float,
                hour: float = 13, slot_on_card: bool = True) -> None:
        if len(cust) == 0:
            return
        amount = -np.round(rng.lognormal(np.log(median), sigma, len(cust)) * 100).astype(np.int64)
        slot = _route_card(rng, pop, cust, day, buf.open_day) if slot_on_card else 0
        labels = (_pick(rng, cat.group(group), len(cust)) if isinstance(group, str)
                  else np.select([group == g for g in np.unique(group)],
                                 [_pick(rng, cat.group(g), len(cust)) for g in np.unique(group)]))
        buf.add(cust, day, amount, labels, _seconds(rng, hour, 2, len(cust)), slot)

    def some(cust: np.ndarray, day: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        sel = rng.random(len(cust)) < share
        return cust[sel], day[sel]

    for kind, share in ((MOVING, 0.7), (BUYING, 0.8)):
        cust, day = events.of(kind)
        c, d = some(cust, day, share)                       # the others move with a hired van or friends
        one_off(c, d + rng.integers(-2, 1, len(c)), "removals", 450 if kind == MOVING else 900, 0.4)
        c, d = some(cust, day, 0.7)
        one_off(c, d + rng.integers(1, 30, len(c)), "furniture", 600, 0.7)
        c, d = some(cust, day, 0.5)
        one_off(c, d + rng.integers(3, 40, len(c)), "home_diy", 150, 0.6)
    c, d = some(*events.of(BUYING), 0.85)                   # some buyers skip the survey
    one_off(c, d - rng.integers(30, 80, len(c)), "surveyor", 600, 0.3, slot_on_card=False)

    cust, day = events.of(BABY)
    reps = rng.poisson(9, len(cust))
    c, d = np.repeat(cust, reps), np.repeat(day, reps) + rng.integers(-100, 120, int(reps.sum()))
    one_off(c, d, "baby", 45, 0.8)
    c, d = some(cust, day, 0.85)
    one_off(c, d - rng.integers(20, 80, len(c)), "baby", 400, 0.4)          # pram, cot

    cust, day = events.of(MARRIAGE)
    c, d = some(cust, day, 0.8)
    one_off(c, d - rng.integers(90, 240, len(c)), "jewellery", 1500, 0.5)
    c, d = some(cust, day, 0.85)
    one_off(c, d - rng.integers(120, 300, len(c)), "wedding_venue", 1500, 0.4, slot_on_card=False)
    one_off(c, d - rng.integers(3, 25, len(c)), "wedding_venue", 3500, 0.5, slot_on_card=False)
    c, d = some(cust, day, 0.75)
    one_off(c, d - rng.integers(5, 40, len(c)), "caterer", 2500, 0.5)
    c, d = some(cust, day, 0.7)
    one_off(c, d - rng.integers(30, 150, len(c)), "bridal", 900, 0.5)

    # a job loss: more cash, fewer card payments (spending itself falls, see bank._spending_level)
    cust, day = some(*events.of(JOB_LOSS), 0.7)
    span = np.maximum(cal.n_days - np.maximum(day, 0), 0)
    reps = rng.poisson(3.0 * span / 30.44)
    c = np.repeat(cust, reps)
    d = np.repeat(np.maximum(day, 0), reps) + (rng.random(int(reps.sum())) * np.repeat(span, reps)).astype(np.int64)
    buf.add(c, d, rng.choice([10, 20, 20, 30, 40, 50, 60, 100], len(c)) * -100, _pick(rng, cat.group("atm"), len(c)),
            _seconds(rng, 14, 4, len(c)), 0, ESSENTIAL)

    charges_fee = rng.random(pop.n) < 0.7                   # the card charges a non-sterling fee
    # look-alikes
    c, d = lookalikes.of(LARGE_PURCHASE)
    group = rng.choice(np.array(["furniture", "appliances", "electronics"]), len(c), p=[0.5, 0.25, 0.25])
    one_off(c, d, group, 900, 0.5, hour=14)
    c, d = lookalikes.of(BABY_GIFT)                         # one or two small gifts, days apart
    reps = rng.integers(1, 3, len(c))
    one_off(np.repeat(c, reps), np.repeat(d, reps) + _nth(reps) * rng.integers(1, 21, int(reps.sum())), "baby", 30,
            0.4)
    c, d = lookalikes.of(JEWELLERY_GIFT)
    one_off(c, d, "jewellery", 180, 0.8)
    c, d = lookalikes.of(FOREIGN_ONLINE)
    reps = rng.integers(1, 3, len(c))
    c, d = np.repeat(c, reps), np.repeat(d, reps) + _nth(reps) * rng.integers(1, 21, int(reps.sum()))
    shop = rng.integers(0, len(FOREIGN_SHOPS), len(c))
    country = np.array([COUNTRIES.index(k) for k, _ in FOREIGN_SHOPS])[shop]
    currency = np.array([CURRENCIES.index(k) for _, k in FOREIGN_SHOPS])[shop]
    fx_minor = -np.round(rng.lognormal(np.log(45), 0.6, len(c)) * 100).astype(np.int64)
    _foreign(rng, pop, buf, c, d, fx_minor, currency, country, cat.group("foreign_online")[shop],
             _seconds(rng, 20, 2.5, len(c)), charges_fee)
    add_travel(rng, pop, cal, events, buf, charges_fee)


def _nth(reps: np.ndarray) -> np.ndarray:
    """For rows repeated `reps` times: 0 for each first copy, 1 for the second, ..."""
    return np.arange(int(reps.sum())) - np.repeat(np.cumsum(reps) - reps, reps)


def _foreign(rng: np.random.Generator, pop: Population, buf: PostingBuffer, cust: np.ndarray, day: np.ndarray,
             fx_minor: np.ndarray, currency: np.ndarray, country: np.ndarray, labels: np.ndarray, sec: np.ndarray,
             charges_fee: np.ndarray) -> None:
    """Card postings in a foreign currency, converted to GBP at fx_rates, plus the card's non-sterling fee."""
    cat = catalog()
    rate = np.array([FX_RATE_MICROS[c] for c in CURRENCIES])[currency]
    pence = to_gbp_pence(fx_minor, rate)
    slot = _route_card(rng, pop, cust, day, buf.open_day)
    buf.add(cust, day, pence, labels, sec, slot, FIXED, fx_minor=fx_minor, cur=currency, country=country)
    fee = -np.round(-pence * 0.0299).astype(np.int64)
    has_fee = charges_fee[cust] & (fee < 0)
    buf.add(cust[has_fee], day[has_fee], fee[has_fee], cat.one("fx_fee"), np.minimum(sec[has_fee] + 1, 86_399),
            slot[has_fee])


def add_travel(rng: np.random.Generator, pop: Population, cal: SimCalendar, events: Events,
               buf: PostingBuffer, charges_fee: np.ndarray) -> None:
    """Flights and hotels booked weeks before; card spending abroad in EUR or USD during the trip (and cash from an
    ATM abroad on some trips), converted to GBP at fx_rates, plus the non-sterling fee of the customer's card."""
    cat = catalog()
    mask = events.kind == TRAVEL
    cust, day, length = events.cust[mask], events.day[mask], events.duration[mask]
    travellers = rng.integers(1, 4, len(cust))
    flight = -np.round(rng.lognormal(np.log(120), 0.5, len(cust)) * travellers * 100).astype(np.int64)
    booked = day - rng.integers(14, 90, len(cust))
    buf.add(cust, booked, flight, _pick(rng, cat.group("airline"), len(cust)), _seconds(rng, 20, 2, len(cust)),
            _route_card(rng, pop, cust, booked, buf.open_day))
    hotel_booked = day - rng.integers(7, 75, len(cust))
    hotel = -np.round(rng.lognormal(np.log(70), 0.5, len(cust)) * length * 100).astype(np.int64)
    buf.add(cust, hotel_booked, hotel, _pick(rng, cat.group("hotel"), len(cust)), _seconds(rng, 21, 2, len(cust)),
            _route_card(rng, pop, cust, hotel_booked, buf.open_day))
    dest = rng.integers(0, len(DESTINATIONS), len(cust))
    country_of = np.array([COUNTRIES.index(c) for c, _ in DESTINATIONS])
    currency_of = np.array([CURRENCIES.index(c) for _, c in DESTINATIONS])
    # spending abroad: a few purchases per day of the trip
    per_day = rng.poisson(3.0, int(length.sum()))
    trip_of_day = np.repeat(np.arange(len(cust)), length)
    offset = np.arange(int(length.sum())) - np.repeat(np.cumsum(length) - length, length)
    trip = np.repeat(trip_of_day, per_day)
    tday = np.repeat(day[trip_of_day] + offset, per_day)
    fx_minor = -np.round(rng.lognormal(np.log(30), 0.8, len(trip)) * 100).astype(np.int64)
    group = rng.choice(["abroad_food", "abroad_shop", "abroad_taxi", "abroad_hotel"], len(trip),
                       p=[0.5, 0.3, 0.15, 0.05])
    labels = np.select([group == g for g in ["abroad_food", "abroad_shop", "abroad_taxi"]],
                       [_pick(rng, cat.group(g), len(trip)) for g in ["abroad_food", "abroad_shop", "abroad_taxi"]],
                       _pick(rng, cat.group("abroad_hotel"), len(trip)))
    _foreign(rng, pop, buf, cust[trip], tday, fx_minor, currency_of[dest[trip]], country_of[dest[trip]], labels,
             _seconds(rng, 15, 4, len(trip)), charges_fee)
    # cash from an ATM abroad on two trips in five, in the first days
    atm = np.flatnonzero(rng.random(len(cust)) < 0.4)
    aday = day[atm] + (rng.random(len(atm)) * np.minimum(length[atm], 3)).astype(np.int64)
    cash = -rng.choice([50, 100, 100, 150, 200], len(atm)) * 100
    _foreign(rng, pop, buf, cust[atm], aday, cash, currency_of[dest[atm]], country_of[dest[atm]],
             np.full(len(atm), cat.one("atm_abroad")), _seconds(rng, 12, 3, len(atm)), charges_fee)


def to_gbp_pence(minor: np.ndarray, rate_micros: np.ndarray) -> np.ndarray:
    """Convert foreign minor units to pence at rate_to_base (micro-units), rounding half away from zero: the rule
    a consumer of the landing files applies with fx_rates.csv (amount x rate_to_base, rounded to 2 decimals)."""
    product = np.abs(minor) * rate_micros
    return np.sign(minor) * ((product + 500_000) // 1_000_000)
