"""Customer messages whose wording follows each simulated customer's situation, and the message_analysis consent.

What a customer writes, and when:
- before a shortfall (the current account's first fall below zero in the window), half of them write about money
  worries 3 to 21 days before it, some in distress;
- a customer in difficulty who still receives marketing (an unsuitable contact) sometimes complains a few days later;
- lost or stolen cards at random (about 2% of customers a quarter);
- moving or buying a home: a message about the new address around the event;
- everyday questions at about one every two months.
Wording: the situations use this module's own templates (filled with amounts, bills and places); lost cards, moves
and everyday questions also draw real customer queries of the matching intent from BANKING77's training file
(Casanueva et al. 2020, CC BY 4.0) when it is there: never the held-out test split. Deterministic for a seed (own
random stream per chunk). The truth (situation and day of each message) goes to truth/messages, never read by the
pipeline.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import CURRENT

CONSENT_RATE = 0.6          # share of customers who allow message_analysis at onboarding
EVERYDAY_PER_DAY = 1 / 60
LOST_CARD_PER_DAY = 0.02 / 90
DIFFICULTY_SHARE = 0.5
COMPLAINT_SHARE = 0.3
MOVE_SHARE = 0.6
SITUATIONS = ("everyday", "difficulty", "complaint", "lost_card", "moving")

DIFFICULTY = [
    "Hi, I'm struggling to pay my {bill} this month and I don't know what to do. Can you help?",
    "I can't afford my {bill} payment due on the {date}, is there anything you can do?",
    "My wages are late and I'm really worried I won't be able to pay my {bill}. Please help",
    "Can I get a payment holiday? I've fallen behind with my {bill} and I'm desperate",
    "I'm short of money until payday and I have a {bill} of {amount} going out. What are my options?",
    "I've got no money left until the end of the month and my {bill} is due. I'm panicking",
    "Could you tell me about hardship support? Things are tight and I can't pay the {bill}",
    "I am behind on my rent and bills and I'm so stressed, please can someone call me",
]
COMPLAINT = [
    "Please stop sending me {product} offers, I told you I'm struggling. This is unacceptable",
    "Why do you keep emailing me about a {product} when I can barely pay my bills? I want to complain",
    "I did not ask for these {product} adverts. Stop contacting me about them",
    "Very poor service. I'm in difficulty and all I get from you are {product} offers. Fed up",
]
LOST_CARD = [
    "I think I lost my card at {place} yesterday, can you block it?",
    "My wallet was stolen with my debit card in it, please freeze the card",
    "I can't find my card anywhere, I think I dropped it in {place}. What do I do?",
    "Someone stole my card, there are payments I did not make",
]
MOVING = [
    "I'm moving house next month, how do I change my address?",
    "We have just moved house, can you update my address to the new one in {place}?",
    "I'm buying a flat in {place}, how do I update my address once I move?",
    "I have a new address from the {day}, where do I change it in the app?",
]
BILLS = ["rent", "council tax", "electricity bill", "gas bill", "credit card", "phone bill", "car loan", "water bill"]
PRODUCTS = ["loan", "credit card", "overdraft", "insurance", "savings account"]
PLACES = ["Leeds", "the supermarket", "town", "the station", "Bristol", "the gym", "Manchester", "the pub"]
# BANKING77 intents whose real queries stand in for a situation (everyday: any intent but these)
INTENTS = {"lost_card": ["lost_or_stolen_card"], "moving": ["edit_personal_details"]}


@functools.lru_cache(maxsize=1)
def banking77_texts() -> dict[str, list[str]]:
    """intent -> the real queries of BANKING77's training file, or {} when the file is not there."""
    import csv

    from pipelines.messages import training_file

    path = training_file()
    if not path.is_file():
        return {}
    out: dict[str, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            out.setdefault(row["category"], []).append(row["text"])
    return out


@dataclass
class Messages:
    cust: np.ndarray           # index into the chunk's customers
    day: np.ndarray            # calendar day index
    sec: np.ndarray            # seconds after midnight
    channel: np.ndarray        # object: chat, email, ...
    text: np.ndarray           # object
    situation: np.ndarray      # object: SITUATIONS


def _fill(rng: np.random.Generator, template: str, cal: SimCalendar, day: int) -> str:
    date = cal.start_date.toordinal() + int(day) + int(rng.integers(3, 20))
    from datetime import date as _date

    when = _date.fromordinal(date)
    return template.format(bill=BILLS[rng.integers(len(BILLS))], product=PRODUCTS[rng.integers(len(PRODUCTS))],
                           place=PLACES[rng.integers(len(PLACES))], amount=f"£{int(rng.integers(40, 900))}",
                           date=f"{when.day}th", day=f"{when.day} {when.strftime('%B')}")


def _texts(rng: np.random.Generator, situation: str, templates: list[str], days: np.ndarray, cal: SimCalendar,
           real_share: float = 0.0) -> list[str]:
    real = [t for intent in INTENTS.get(situation, []) for t in banking77_texts().get(intent, [])]
    out = []
    for day in days:
        if real and rng.random() < real_share:
            out.append(real[rng.integers(len(real))])
        else:
            out.append(_fill(rng, templates[rng.integers(len(templates))], cal, day))
    return out


def shortfall_days(chunk, cal: SimCalendar) -> tuple[np.ndarray, np.ndarray]:
    """(customer, day) of the first fall below zero of each current account within the window (not on day 0)."""
    acc = chunk.accounts
    current = np.flatnonzero(acc.slot == CURRENT)
    days = np.arange(cal.n_days)[:, None]
    live = (days >= acc.first_day[None, current]) & (days <= acc.last_day[None, current])
    below = (acc.history[:, current] < 0) & live
    crossing = below[1:] & ~below[:-1]
    has = crossing.any(axis=0)
    return acc.cust[current][has], crossing.argmax(axis=0)[has] + 1


def draw_messages(rng: np.random.Generator, chunk, cal: SimCalendar, marketing: np.ndarray) -> Messages:
    """Every message of the chunk's customers from the window start to D. `marketing`: per customer, whether any
    marketing consent was granted (the contact a complaint answers)."""
    pop, d = chunk.pop, cal.d_index
    parts: list[tuple] = []

    def add(cust: np.ndarray, day: np.ndarray, channels: list[str], p: list[float], situation: str,
            texts: list[str]) -> None:
        keep = (day >= 0) & (day <= d) & (day >= pop.since_day[cust])
        cust, day = cust[keep], day[keep]
        texts = [t for t, k in zip(texts, keep) if k]
        channel = np.array(channels, dtype=object)[rng.choice(len(channels), size=len(cust), p=p)]
        parts.append((cust, day, rng.integers(7 * 3600, 23 * 3600, len(cust)), channel,
                      np.array(texts, dtype=object), np.full(len(cust), situation, dtype=object)))

    # everyday questions: real queries of any intent
    n_everyday = rng.poisson(EVERYDAY_PER_DAY * cal.n_days, pop.n)
    cust = np.repeat(np.arange(pop.n), n_everyday)
    day = rng.integers(0, cal.n_days, len(cust))
    pool = [t for intent, texts in banking77_texts().items() for t in texts
            if intent not in {i for v in INTENTS.values() for i in v}] or ["How do I check my balance?"]
    add(cust, day, ["chat", "email", "app_review"], [0.7, 0.2, 0.1], "everyday",
        [pool[i] for i in rng.integers(0, len(pool), len(cust))])
    # difficulty before a shortfall, and for some a complaint after marketing kept coming
    short_cust, short_day = shortfall_days(chunk, cal)
    writes = rng.random(len(short_cust)) < DIFFICULTY_SHARE
    c, t = short_cust[writes], short_day[writes] - rng.integers(3, 22, int(writes.sum()))
    add(c, t, ["chat", "email", "call_transcript"], [0.5, 0.3, 0.2], "difficulty", _texts(rng, "difficulty",
                                                                                        DIFFICULTY, t, cal))
    complains = marketing[c] & (rng.random(len(c)) < COMPLAINT_SHARE)
    c2, t2 = c[complains], t[complains] + rng.integers(2, 15, int(complains.sum()))
    add(c2, t2, ["complaint_form", "email", "chat"], [0.5, 0.3, 0.2], "complaint",
        _texts(rng, "complaint", COMPLAINT, t2, cal))
    # lost or stolen cards
    n_lost = rng.poisson(LOST_CARD_PER_DAY * cal.n_days, pop.n)
    cust = np.repeat(np.arange(pop.n), n_lost)
    day = rng.integers(0, cal.n_days, len(cust))
    add(cust, day, ["chat", "call_transcript", "email"], [0.6, 0.3, 0.1], "lost_card",
        _texts(rng, "lost_card", LOST_CARD, day, cal, real_share=0.5))
    # moving or buying a home
    from pipelines.sources.simulate.lifeevents import EVENT_TYPES

    ev = chunk.events
    moving = np.isin(ev.kind, [EVENT_TYPES.index("moving_home"), EVENT_TYPES.index("buying_home")])
    moving &= rng.random(len(ev.kind)) < MOVE_SHARE
    cust, day = ev.cust[moving], ev.day[moving] + rng.integers(-20, 6, int(moving.sum()))
    add(cust, day, ["chat", "email"], [0.7, 0.3], "moving", _texts(rng, "moving", MOVING, day, cal, real_share=0.3))

    merged = [np.concatenate([p[i] for p in parts]) if parts else np.zeros(0) for i in range(6)]
    order = np.lexsort((merged[2], merged[1], merged[0]))
    return Messages(*(m[order] for m in merged))


def draw_message_consent(rng: np.random.Generator, pop) -> np.ndarray:
    """Per customer: message_analysis granted at onboarding (a refusal is recorded too)."""
    return rng.random(pop.n) < CONSENT_RATE
