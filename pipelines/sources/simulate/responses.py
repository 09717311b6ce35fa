"""Customers who answer: the hidden response model of the simulated bank (ground truth, kept in truth/; the
pipeline never reads it).

Each customer has hidden traits drawn once (`draw_model`): how engaged they are (the base chance of opening a
message), how much each channel suits them (app people open push and in-app messages, others e-mail or letters; a
phone call is answered or not), a taste per family of actions, how quickly contact tires them (fatigue), how prone
they are to complain and to unsubscribe.

Whether a recommendation is taken depends on the customer's true situation on the day (`situation`): an at-risk
customer (little headroom, days below zero, spending beyond their income) takes shortfall help; a saver (a real
monthly surplus and money to spare) takes a sweep or a savings product; nobody in difficulty wants a credit card (and
an offer of credit to someone in difficulty is the unsuitable contact that brings complaints); a traveller takes
travel tips and insurance; a buyer a mortgage. More contacts in the last days mean fewer opens and more
unsubscribes. The events follow the CRM's vocabulary: delivered, opened, clicked, accepted, declined, complained,
unsubscribed, each with a time on the day after the night that made the recommendation. The numbers each answer
draws are keyed by the customer, the night and the action (`answer_draws`), so that two runs whose exports differ
give the same offer to the same customer on the same night the same answer (common random numbers).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate import keyed
from pipelines.sources.simulate.catalog import CURRENT, SAVINGS
from pipelines.sources.simulate.lifeevents import BABY, BUYING, JOB_LOSS, MOVING, RETIREMENT, TRAVEL, Events
from pipelines.sources.simulate.population import Population

CHANNELS = ["email", "sms", "push", "inapp", "phone", "letter", "branch"]
FAMILIES = ["shortfall", "hardship", "budgeting", "benefits", "gambling", "savings", "credit", "insurance",
            "mortgage", "info", "other"]
MARKETING = {"email", "sms", "push", "inapp"}


@dataclass(frozen=True)
class ActionTruth:
    family: str
    commercial: bool = False
    credit: bool = False


# what each action of the bank's catalogue is to a customer (by its id, which the CRM export carries)
ACTIONS: dict[str, ActionTruth] = {
    "shortfall_warning": ActionTruth("shortfall"), "overdraft_buffer": ActionTruth("shortfall"),
    "hardship_support": ActionTruth("hardship"), "advisor_callback": ActionTruth("hardship"),
    "budgeting_tools": ActionTruth("budgeting"), "benefits_check": ActionTruth("benefits"),
    "gambling_support": ActionTruth("gambling"), "bill_reminder": ActionTruth("budgeting"),
    "salary_switch_help": ActionTruth("info"), "subscription_review": ActionTruth("budgeting"),
    "travel_money_tips": ActionTruth("info"), "card_replacement": ActionTruth("info"),
    "easy_access_savings": ActionTruth("savings", commercial=True), "isa": ActionTruth("savings", commercial=True),
    "safe_to_save_sweep": ActionTruth("savings", commercial=True),
    "regular_saver": ActionTruth("savings", commercial=True), "child_savings": ActionTruth("savings", commercial=True),
    "credit_card": ActionTruth("credit", commercial=True, credit=True),
    "personal_loan": ActionTruth("credit", commercial=True, credit=True),
    "overdraft_increase": ActionTruth("credit", commercial=True, credit=True),
    "mortgage": ActionTruth("mortgage", commercial=True, credit=True),
    "home_insurance": ActionTruth("insurance", commercial=True),
    "travel_insurance": ActionTruth("insurance", commercial=True),
    "pension_consolidation": ActionTruth("other", commercial=True),
    "joint_account": ActionTruth("other", commercial=True),
    "savings_plan": ActionTruth("savings"), "debt_plan": ActionTruth("budgeting"),
    "income_drop_ahead": ActionTruth("shortfall"), "large_bill_ahead": ActionTruth("budgeting"),
}
UNKNOWN_ACTION = ActionTruth("other", commercial=True)


@dataclass
class ResponseModel:
    """Hidden traits per customer of a chunk."""

    engagement: np.ndarray        # base chance of opening a message on a well-suited channel
    channel: np.ndarray           # (n, channels) multiplier of the open chance per channel
    taste: np.ndarray             # (n, families) multiplier of the acceptance chance per family
    fatigue: np.ndarray           # how much each recent contact lowers the open chance
    complaint: np.ndarray         # multiplier of the complaint chance
    unsubscribe: np.ndarray       # multiplier of the unsubscribe chance


def draw_model(rng: np.random.Generator, pop: Population, year: int) -> ResponseModel:
    n = pop.n
    age = pop.age_at(year)
    digital = np.clip(rng.normal(1.4 - 0.012 * age, 0.35, n), 0.05, 1.5)
    channel = np.empty((n, len(CHANNELS)))
    channel[:, CHANNELS.index("email")] = rng.uniform(0.5, 1.1, n)
    channel[:, CHANNELS.index("sms")] = rng.uniform(0.6, 1.2, n)
    channel[:, CHANNELS.index("push")] = digital * rng.uniform(0.7, 1.2, n)
    channel[:, CHANNELS.index("inapp")] = digital * rng.uniform(0.8, 1.3, n)
    channel[:, CHANNELS.index("phone")] = rng.uniform(0.8, 1.5, n)
    channel[:, CHANNELS.index("letter")] = (2.0 - digital) * rng.uniform(0.4, 0.8, n)
    channel[:, CHANNELS.index("branch")] = rng.uniform(0.2, 0.6, n)
    return ResponseModel(
        engagement=rng.beta(3, 4, n),
        channel=np.clip(channel, 0.02, 2.0),
        taste=np.exp(rng.normal(0.0, 0.45, (n, len(FAMILIES)))),
        fatigue=rng.uniform(0.08, 0.35, n),
        complaint=np.exp(rng.normal(0.0, 0.6, n)),
        unsubscribe=np.exp(rng.normal(0.0, 0.5, n)),
    )


@dataclass
class Situation:
    """A customer's true circumstances at the start of a day (from the world's own state, not the bank's view)."""

    at_risk: np.ndarray
    difficulty: np.ndarray
    saver: np.ndarray
    surplus: np.ndarray           # monthly income minus what they tend to spend, pence
    travelling_soon: np.ndarray
    moving_soon: np.ndarray
    buying_soon: np.ndarray
    low_income: np.ndarray
    job_loss_recent: np.ndarray
    gambler: np.ndarray
    has_children: np.ndarray
    age: np.ndarray
    savings: np.ndarray           # savings balance, pence
    heavy_spender: np.ndarray
    income_drop_soon: np.ndarray | None = None   # a job loss or retirement within the next 60 days (None: nobody)


def _event_near(events: Events, kinds: tuple[int, ...], n: int, lo: np.ndarray | int, hi: np.ndarray | int,
                t: int) -> np.ndarray:
    """Customers with an event of these kinds on a day in [t + lo, t + hi]."""
    out = np.zeros(n, dtype=bool)
    mask = np.isin(events.kind, kinds) & (events.day >= t + lo) & (events.day <= t + hi)
    out[events.cust[mask]] = True
    return out


def situation(pop: Population, events: Events, bal: np.ndarray, budget: np.ndarray, negative_days_30: np.ndarray,
              t: int, year: int) -> Situation:
    """The true situation before day t is booked. bal: (5, n) end-of-day balances of day t-1, pence."""
    n = pop.n
    headroom = bal[CURRENT] + pop.overdraft_limit
    surplus = pop.income * (1.0 - pop.spend_ratio)
    at_risk = (headroom < 0.5 * budget) | (negative_days_30 >= 3) | (pop.spend_ratio > 1.02)
    job_loss = _event_near(events, (JOB_LOSS,), n, -120, 0, t)
    difficulty = at_risk | pop.gambler | (pop.vulnerability > 0) | job_loss
    saver = (surplus > 15_000) & ~at_risk & (headroom > budget)
    return Situation(
        at_risk=at_risk, difficulty=difficulty, saver=saver, surplus=surplus,
        travelling_soon=_event_near(events, (TRAVEL,), n, 0, 75, t),
        moving_soon=_event_near(events, (MOVING, BUYING), n, -14, 120, t),
        buying_soon=_event_near(events, (BUYING,), n, 0, 240, t),
        low_income=pop.income < 120_000, job_loss_recent=job_loss, gambler=pop.gambler.copy(),
        has_children=pop.has_children | _event_near(events, (BABY,), n, -365, 60, t),
        age=(year - pop.birth_year).astype(float), savings=np.maximum(bal[SAVINGS], 0).astype(float),
        heavy_spender=pop.spend_ratio > 1.0,
        income_drop_soon=_event_near(events, (JOB_LOSS, RETIREMENT), n, 0, 60, t),
    )


def accept_probability(action_ids: np.ndarray, cust: np.ndarray, sit: Situation, model: ResponseModel) -> np.ndarray:
    """P(accept | opened) for each row (an action id and a customer of the chunk)."""
    out = np.zeros(len(cust))
    for action in np.unique(action_ids):
        rows = np.flatnonzero(action_ids == action)
        c = cust[rows]
        s = {name: (np.zeros(len(c), dtype=bool) if getattr(sit, name) is None else getattr(sit, name)[c])
             for name in Situation.__dataclass_fields__}
        p = _base(str(action), s)
        family = FAMILIES.index(ACTIONS.get(str(action), UNKNOWN_ACTION).family)
        out[rows] = np.clip(p * model.taste[c, family], 0.0, 0.9)
    return out


def _base(action: str, s: dict[str, np.ndarray]) -> np.ndarray:
    """The hidden acceptance chance of an opened recommendation, by the customer's true situation."""
    at_risk, difficulty, saver = s["at_risk"], s["difficulty"], s["saver"]
    w = np.where
    if action == "shortfall_warning":
        return w(at_risk, 0.45, 0.06)
    if action == "overdraft_buffer":
        return w(at_risk, 0.50, 0.08)
    if action in ("hardship_support", "advisor_callback"):
        return w(difficulty & at_risk, 0.40, w(difficulty, 0.15, 0.02))
    if action == "budgeting_tools":
        return w(at_risk | s["heavy_spender"], 0.30, 0.05)
    if action == "income_drop_ahead":
        # a heads-up before the income falls: taken by those whose income is about to drop (or just dropped), a
        # little by those short of money anyway, rarely by the others
        return w(s["income_drop_soon"] | s["job_loss_recent"], 0.40, w(at_risk, 0.10, 0.03))
    if action == "large_bill_ahead":
        # setting money aside for a large payment: easy for a saver, hard for someone already short (the world does
        # not look up each customer's next large payment when answering: the ability to set money aside decides)
        return w(at_risk, 0.04, w(saver, 0.20, 0.10))
    if action == "bill_reminder":
        return w(at_risk, 0.25, 0.10)
    if action == "subscription_review":
        return w(at_risk | s["heavy_spender"], 0.25, 0.07)
    if action == "benefits_check":
        return w(s["low_income"] | s["job_loss_recent"], 0.30, 0.02)
    if action == "gambling_support":
        return w(s["gambler"], 0.25, 0.01)
    if action == "travel_money_tips":
        return w(s["travelling_soon"], 0.30, 0.02)
    if action == "card_replacement":
        # offered to customers whose message reported a lost or stolen card: most of them want it
        return np.full(len(at_risk), 0.6)
    if action == "salary_switch_help":
        return np.full(len(at_risk), 0.04)
    if action in ("easy_access_savings", "regular_saver"):
        return w(saver, 0.22, w(at_risk, 0.0, 0.02))
    if action == "safe_to_save_sweep":
        return w(saver, 0.30, w(at_risk, 0.0, 0.02))
    if action == "isa":
        return w(saver & (s["savings"] > 200_000), 0.25, w(saver, 0.06, 0.0))
    if action == "child_savings":
        return w(s["has_children"] & saver, 0.20, 0.01)
    if action in ("credit_card", "personal_loan", "overdraft_increase"):
        # nobody in difficulty wants a credit card; a few well-off heavy spenders take one
        return w(difficulty, 0.0, w(s["heavy_spender"] | (s["surplus"] < 0), 0.04, 0.03))
    if action == "mortgage":
        return w(s["buying_soon"] & ~difficulty, 0.30, 0.0)
    if action == "home_insurance":
        return w(s["moving_soon"], 0.20, 0.02)
    if action == "travel_insurance":
        return w(s["travelling_soon"], 0.25, 0.01)
    if action == "pension_consolidation":
        return w(s["age"] >= 40, 0.05, 0.01)
    if action == "joint_account":
        return np.full(len(at_risk), 0.02)
    return np.full(len(at_risk), 0.01)


@dataclass
class Answers:
    """The events of a batch of recommendations (one row per event) and, per recommendation, what happened."""

    row: np.ndarray               # index of the recommendation in the batch
    event: np.ndarray             # event name
    sec: np.ndarray               # seconds after midnight (local time) on the day
    opened: np.ndarray            # per recommendation
    accepted: np.ndarray
    complained: np.ndarray
    unsubscribed: np.ndarray
    p_open: np.ndarray
    p_accept: np.ndarray


# the uniform numbers each recommendation's answer uses, in the columns of `respond`'s `draws`
DRAWS = ("open", "accept", "click", "decline", "complain", "unsubscribe", "deliver_at", "open_delay", "click_delay",
         "answer_delay", "complain_delay", "unsubscribe_delay")


def answer_draws(seed: int, numbers: np.ndarray, night: int, action_ids: np.ndarray) -> np.ndarray:
    """(rows, len(DRAWS)) uniforms for the answers to a night's recommendations, keyed by (seed, customer number,
    night, action, occurrence) (`keyed`): the same customer answering the same offer on the same night draws the same
    numbers whatever else the export holds (common random numbers across runs whose exports differ)."""
    actions = keyed.text_words(action_ids)
    nth = keyed.occurrence(np.asarray(numbers), actions) if len(numbers) else np.zeros(0, dtype=np.int64)
    return keyed.uniforms(len(DRAWS), seed, "responses", np.asarray(numbers, dtype=np.int64), night, actions, nth)


def _integers(u: np.ndarray, lo: int, hi: int) -> np.ndarray:
    """Integers in [lo, hi) from uniforms."""
    return lo + np.minimum((u * (hi - lo)).astype(np.int64), hi - lo - 1)


def respond(draws: np.ndarray, model: ResponseModel, sit: Situation, cust: np.ndarray,
            action_ids: np.ndarray, channels: np.ndarray, ranks: np.ndarray, contacts_7d: np.ndarray,
            marketing_14d: np.ndarray, unsubscribed: np.ndarray) -> Answers:
    """What each customer does with tonight's recommendations (one row per recommendation).

    draws: (rows, len(DRAWS)) uniforms, one row per recommendation (`answer_draws`); contacts_7d / marketing_14d: per
    customer of the chunk, recommendations delivered in the last 7 days / commercial ones in the last 14 (fatigue);
    unsubscribed: (n, channels) channels the customer left."""
    m = len(cust)
    if draws.shape != (m, len(DRAWS)):
        raise ValueError(f"respond needs {len(DRAWS)} uniforms per recommendation, got an array {draws.shape}")
    chan = np.array([CHANNELS.index(c) if c in CHANNELS else CHANNELS.index("email") for c in channels], dtype=int)
    truth = [ACTIONS.get(str(a), UNKNOWN_ACTION) for a in action_ids]
    commercial = np.array([t.commercial for t in truth], dtype=bool)
    credit = np.array([t.credit for t in truth], dtype=bool)
    # tonight's messages count towards fatigue too (a customer's third message tonight is read less)
    tonight = np.zeros(len(model.engagement))
    np.add.at(tonight, cust, 1)
    load = contacts_7d[cust] + tonight[cust] - 1 + (ranks - 1) * 0.5
    left = unsubscribed[cust, chan]
    p_open = model.engagement[cust] * model.channel[cust, chan] * np.exp(-model.fatigue[cust] * load)
    p_open = np.clip(np.where(left & commercial, 0.2 * p_open, p_open), 0.0, 0.97)
    p_accept = accept_probability(np.asarray(action_ids, dtype=object), cust, sit, model)
    u = draws
    opened = u[:, 0] < p_open
    accepted = opened & (u[:, 1] < p_accept)
    clicked = accepted | (opened & (u[:, 2] < 0.25 + 0.5 * np.minimum(1.0, 3 * p_accept)))
    declined = opened & ~accepted & (u[:, 3] < 0.25 * (1 - p_accept))
    unsuitable = (commercial & sit.difficulty[cust]) | (credit & sit.at_risk[cust]) | left
    p_complain = 0.0015 * model.complaint[cust] * np.where(unsuitable, 12.0, 1.0) * (1 + 0.3 * np.maximum(load - 3, 0))
    complained = opened & (u[:, 4] < np.clip(p_complain, 0, 0.5))
    is_marketing = commercial & np.isin(np.asarray(channels, dtype=object), list(MARKETING))
    p_unsub = model.unsubscribe[cust] * (0.003 + 0.012 * np.maximum(marketing_14d[cust] + tonight[cust] - 3, 0))
    unsub = opened & is_marketing & ~left & (u[:, 5] < np.clip(p_unsub, 0, 0.5))

    delivered_at = _integers(u[:, 6], 7 * 3600, 9 * 3600)
    open_delay = (-3 * 3600 * np.log1p(-u[:, 7])).astype(np.int64)          # exponential, mean 3 hours
    open_at = np.minimum(delivered_at + open_delay + 60, 21 * 3600)
    click_at = open_at + _integers(u[:, 8], 30, 20 * 60)
    answer_at = click_at + _integers(u[:, 9], 30, 30 * 60)
    complain_at = open_at + _integers(u[:, 10], 30 * 60, 5 * 3600)
    unsub_at = open_at + _integers(u[:, 11], 60, 10 * 60)
    parts = [(np.arange(m), "delivered", delivered_at)]
    for mask, name, when in ((opened, "opened", open_at), (clicked, "clicked", click_at),
                             (accepted, "accepted", answer_at), (declined, "declined", answer_at),
                             (complained, "complained", complain_at), (unsub, "unsubscribed", unsub_at)):
        rows = np.flatnonzero(mask)
        parts.append((rows, name, when[rows]))
    row = np.concatenate([p[0] for p in parts]).astype(np.int64)
    event = np.concatenate([np.full(len(p[0]), p[1], dtype=object) for p in parts])
    sec = np.minimum(np.concatenate([p[2] for p in parts]).astype(np.int64), 86_399)
    order = np.lexsort((sec, row))
    return Answers(row=row[order], event=event[order], sec=sec[order], opened=opened, accepted=accepted,
                   complained=complained, unsubscribed=unsub, p_open=p_open, p_accept=p_accept)

