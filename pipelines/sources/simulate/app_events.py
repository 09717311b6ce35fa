"""What the simulated customers do in the bank's app (landing kind app_events), following their behaviour.

Who uses the app: most working-age customers and students, fewer retirees; each user has a habit (sessions a day,
some on the web). What they open follows who they are and what is happening to them:
- everybody looks at their accounts and payments; some read their spending insights;
- on days their current account is low (below a tenth of their monthly income, or overdrawn) they open the
  cash-flow view far more often, and half of those who go overdrawn look for money help;
- savers use savings goals (feature use: moving money to a goal); organisers use the bills calendar;
- before and during a trip abroad: travel money; around a move: the moving checklist; families: the family budget;
- freelancers search for tax, retirees for pensions, but rarely find the tax-provisioning or wealth-preservation
  areas by themselves (what the dashboard's introductions are for).
Notifications: three in four app users get push notifications (about one every twelve days); a quarter of them
dismiss almost all of them (the push-fatigued), the others open some and dismiss some; in-app messages show in some
sessions. Every event is `app`, `web`, `push` or `inapp` as the landing contract says.

Deterministic for a seed, from its own random stream per chunk (the other landing files do not change). The truth
(who is an app user, their habit, who dismisses pushes) goes to truth/app_users, never read by the pipeline.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipelines.sources.simulate.calendar import SimCalendar
from pipelines.sources.simulate.catalog import CURRENT, SAVINGS
from pipelines.sources.simulate.lifeevents import BABY, BUYING, MOVING, TRAVEL
from pipelines.sources.simulate.population import FREELANCER, HOURLY, RETIRED, STUDENT, ARCHETYPES

EVENT_TYPES = ["screen_viewed", "feature_used", "searched", "notification_opened", "notification_dismissed"]
VIEWED, USED, SEARCHED, OPENED, DISMISSED = range(5)
TARGETS = ["home", "accounts_overview", "spending_insights", "cash_flow_view", "savings_goals", "bills_calendar",
           "money_help", "travel_money", "moving_checklist", "family_budget", "tax_provisioning",
           "wealth_preservation", "payments", "cards", "statements", "settings", "help"]
T = {name: i for i, name in enumerate(TARGETS)}
CHANNELS = ["app", "web", "push", "inapp"]
APP, WEB, PUSH, INAPP = range(4)

# share of each archetype (population.ARCHETYPES order) who use the app
APP_SHARE = {"salaried": 0.80, "hourly": 0.75, "freelancer": 0.85, "retired": 0.45, "benefits": 0.65, "student": 0.95}
PUSH_SHARE = 0.75              # app users who get push notifications
PUSH_PER_DAY = 1 / 12
DISMISSER_SHARE = 0.25         # push users who dismiss almost every push
INAPP_PER_SESSION = 0.10
SEARCH_PER_SESSION = 0.06
HOME_PER_SESSION = 0.6
# chance that a module event is a feature use rather than a screen view
FEATURE_SHARE = np.full(len(TARGETS), 0.05)
FEATURE_SHARE[[T["savings_goals"], T["payments"], T["cards"], T["bills_calendar"], T["cash_flow_view"]]] = \
    [0.35, 0.5, 0.3, 0.15, 0.1]
BATCH = 200_000                # sessions whose module weights are built at once (bounded memory)


@dataclass
class AppEvents:
    cust: np.ndarray        # index into the chunk's customers
    day: np.ndarray
    sec: np.ndarray
    event_type: np.ndarray  # index into EVENT_TYPES
    target: np.ndarray      # index into TARGETS
    channel: np.ndarray     # index into CHANNELS


@dataclass
class AppUsers:
    """The truth of the chunk's app use (per customer)."""
    app_user: np.ndarray
    sessions_per_day: np.ndarray
    web_share: np.ndarray
    push_user: np.ndarray
    push_dismisser: np.ndarray


def _windows(chunk, kind: int, n: int, n_days: int, before: int, after: int) -> np.ndarray:
    """(n, days) bool: within `before` days before to `after` days after any event of a kind (trips: their
    length too)."""
    ev = chunk.events
    mask = np.zeros((n, n_days), dtype=bool)
    pick = ev.kind == kind
    days = np.arange(n_days)
    for c, d, length in zip(ev.cust[pick], ev.day[pick], ev.duration[pick]):
        mask[c] |= (days >= d - before) & (days <= d + after + (int(length) if kind == TRAVEL else 0))
    return mask


def _tight(chunk, n: int, n_days: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, days) bool: the current account ended the day before low (below a tenth of the monthly income, at least
    £100) or overdrawn; and overdrawn."""
    acc, pop = chunk.accounts, chunk.pop
    low = np.zeros((n, n_days), dtype=bool)
    overdrawn = np.zeros((n, n_days), dtype=bool)
    current = np.flatnonzero(acc.slot == CURRENT)
    if not len(current):
        return low, overdrawn
    cust = acc.cust[current]
    balance = acc.history[:, current].T                                   # (accounts, days), pence
    live = (np.arange(n_days)[None, :] >= acc.first_day[current, None]) & \
        (np.arange(n_days)[None, :] <= acc.last_day[current, None])
    limit = np.maximum(pop.income[cust] // 10, 10_000)[:, None]
    previous = np.concatenate([balance[:, :1], balance[:, :-1]], axis=1)  # the balance at the end of the day before
    np.logical_or.at(low, cust, live & (previous < limit))
    np.logical_or.at(overdrawn, cust, live & (previous < 0))
    return low, overdrawn


def draw_app_events(rng: np.random.Generator, chunk, cal: SimCalendar) -> tuple[AppEvents, AppUsers]:
    """Every app event of the chunk's customers from the window start to D, and the truth of their app use."""
    pop, n, n_days = chunk.pop, chunk.pop.n, cal.n_days
    arch = np.array(ARCHETYPES, dtype=object)[pop.archetype]
    app_user = rng.random(n) < np.array([APP_SHARE[a] for a in arch])
    rate = np.clip(np.exp(rng.normal(np.log(0.3), 0.6, n)), 0.03, 2.0)
    web_share = np.where(rng.random(n) < 0.25, 0.5, 0.0)
    push_user = app_user & (rng.random(n) < PUSH_SHARE)
    dismisser = push_user & (rng.random(n) < DISMISSER_SHARE)
    insights_fan = rng.random(n) < 0.5
    organiser = rng.random(n) < 0.25
    seeks_help = rng.random(n) < 0.5
    budgeter = pop.has_children & (rng.random(n) < 0.3)
    saver = pop.saver_amount > 0
    has_savings = chunk.products.held[SAVINGS]
    first_day = np.clip(pop.since_day, 0, n_days)
    low, overdrawn = _tight(chunk, n, n_days)
    travel = _windows(chunk, TRAVEL, n, n_days, 30, 0)
    moving = _windows(chunk, MOVING, n, n_days, 45, 14) | _windows(chunk, BUYING, n, n_days, 60, 14)
    baby = _windows(chunk, BABY, n, n_days, 90, 120)

    # sessions: a Poisson number per user and day, more on days money is tight
    days = np.arange(n_days)[None, :]
    expected = np.where(app_user[:, None] & (days >= first_day[:, None]), rate[:, None], 0.0) * np.where(low, 2.0, 1.0)
    counts = rng.poisson(expected)
    s_cust, s_day = np.nonzero(counts)
    reps = counts[s_cust, s_day]
    s_cust, s_day = np.repeat(s_cust, reps), np.repeat(s_day, reps)
    s_sec = rng.integers(7 * 3600, 23 * 3600 - 900, len(s_cust))
    s_channel = np.where(rng.random(len(s_cust)) < web_share[s_cust], WEB, APP)
    parts: list[tuple[np.ndarray, ...]] = []

    def add(cust, day, sec, kind, target, channel) -> None:
        size = len(cust)
        parts.append((cust, day, sec, np.broadcast_to(kind, size).astype(np.int8),
                      np.broadcast_to(target, size).astype(np.int8), np.broadcast_to(channel, size).astype(np.int8)))

    home = rng.random(len(s_cust)) < HOME_PER_SESSION
    add(s_cust[home], s_day[home], s_sec[home], VIEWED, T["home"], s_channel[home])
    for start in range(0, len(s_cust), BATCH):
        c, d, s, ch = (a[start:start + BATCH] for a in (s_cust, s_day, s_sec, s_channel))
        weights = _module_weights(c, d, arch, low, overdrawn, travel, moving, baby, insights_fan, organiser,
                                  seeks_help, budgeter, saver, has_savings)
        k = np.minimum(1 + rng.poisson(0.6, len(c)), 4)
        for step in range(4):
            go = k > step
            target = _choose(rng, weights[go])
            kind = np.where(rng.random(int(go.sum())) < FEATURE_SHARE[target], USED, VIEWED)
            add(c[go], d[go], s[go] + 20 * (step + 1), kind, target, ch[go])
        searching = rng.random(len(c)) < SEARCH_PER_SESSION
        search_weights = _search_weights(c[searching], d[searching], arch, low, travel, moving, saver)
        add(c[searching], d[searching], s[searching] + 10, SEARCHED, _choose(rng, search_weights), ch[searching])
        # an in-app message shows in some sessions: opened, dismissed or left
        shown = rng.random(len(c)) < INAPP_PER_SESSION
        answer = rng.random(int(shown.sum()))
        message_target = _notification_targets(rng, c[shown], d[shown], low)
        for kind, mask in ((OPENED, answer < 0.35), (DISMISSED, (answer >= 0.35) & (answer < 0.8))):
            add(c[shown][mask], d[shown][mask], s[shown][mask] + 5, kind, message_target[mask], INAPP)

    # push notifications: about one every twelve days; dismissers dismiss almost all
    p_counts = rng.poisson(np.where(push_user[:, None] & (days >= first_day[:, None]), PUSH_PER_DAY, 0.0))
    p_cust, p_day = np.nonzero(p_counts)
    reps = p_counts[p_cust, p_day]
    p_cust, p_day = np.repeat(p_cust, reps), np.repeat(p_day, reps)
    p_sec = rng.integers(9 * 3600, 20 * 3600, len(p_cust))
    answer = rng.random(len(p_cust))
    opens = np.where(dismisser[p_cust], 0.08, 0.35)
    dismisses = np.where(dismisser[p_cust], 0.85, 0.20)
    target = _notification_targets(rng, p_cust, p_day, low)
    for kind, mask in ((OPENED, answer < opens), (DISMISSED, (answer >= opens) & (answer < opens + dismisses))):
        add(p_cust[mask], p_day[mask], p_sec[mask], kind, target[mask], PUSH)

    merged = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    order = np.lexsort((merged[3], merged[2], merged[1], merged[0]))
    events = AppEvents(*(m[order] for m in merged))
    return events, AppUsers(app_user, rate, web_share, push_user, dismisser)


def _choose(rng: np.random.Generator, weights: np.ndarray) -> np.ndarray:
    """One category per row, with probability proportional to the row's weights."""
    if not len(weights):
        return np.zeros(0, dtype=np.int64)
    cum = np.cumsum(weights, axis=1)
    draw = rng.random(len(weights))[:, None] * cum[:, -1:]
    return (cum <= draw).sum(axis=1)


def _module_weights(c, d, arch, low, overdrawn, travel, moving, baby, insights_fan, organiser, seeks_help, budgeter,
                    saver, has_savings) -> np.ndarray:
    """(sessions, targets) weights of what a customer opens in a session on a day."""
    w = np.zeros((len(c), len(TARGETS)), dtype=np.float32)
    w[:, T["accounts_overview"]] = 3.0
    w[:, T["payments"]] = 1.5
    w[:, T["cards"]] = 0.4
    w[:, T["statements"]] = 0.2
    w[:, T["settings"]] = 0.1
    w[:, T["help"]] = 0.1
    w[:, T["spending_insights"]] = np.where(insights_fan[c], 1.2, 0.1)
    irregular = np.isin(arch[c], [ARCHETYPES[FREELANCER], ARCHETYPES[HOURLY], ARCHETYPES[STUDENT]])
    w[:, T["cash_flow_view"]] = 0.1 + 1.0 * irregular + 3.0 * low[c, d]
    w[:, T["money_help"]] = np.where(overdrawn[c, d] & seeks_help[c], 1.2, 0.0)
    w[:, T["savings_goals"]] = np.where(saver[c], 2.0, np.where(has_savings[c], 0.6, 0.03))
    w[:, T["bills_calendar"]] = np.where(organiser[c], 0.8, 0.05)
    w[:, T["travel_money"]] = np.where(travel[c, d], 2.0, 0.0)
    w[:, T["moving_checklist"]] = np.where(moving[c, d], 1.5, 0.0)
    w[:, T["family_budget"]] = np.where(baby[c, d], 1.0, np.where(budgeter[c], 0.6, 0.0))
    w[:, T["tax_provisioning"]] = np.where(arch[c] == ARCHETYPES[FREELANCER], 0.05, 0.0)
    w[:, T["wealth_preservation"]] = np.where(arch[c] == ARCHETYPES[RETIRED], 0.05, 0.0)
    return w


def _search_weights(c, d, arch, low, travel, moving, saver) -> np.ndarray:
    """(searches, targets) weights of what a search is about."""
    w = np.zeros((len(c), len(TARGETS)), dtype=np.float32)
    w[:, T["help"]] = 1.0
    w[:, T["payments"]] = 1.0
    w[:, T["cards"]] = 1.0
    w[:, T["tax_provisioning"]] = np.where(arch[c] == ARCHETYPES[FREELANCER], 3.0, 0.0)
    w[:, T["wealth_preservation"]] = np.where(arch[c] == ARCHETYPES[RETIRED], 3.0, 0.0)
    w[:, T["travel_money"]] = np.where(travel[c, d], 4.0, 0.0)
    w[:, T["moving_checklist"]] = np.where(moving[c, d], 4.0, 0.0)
    w[:, T["money_help"]] = np.where(low[c, d], 3.0, 0.0)
    w[:, T["savings_goals"]] = np.where(saver[c], 1.5, 0.0)
    return w


def _notification_targets(rng: np.random.Generator, c: np.ndarray, d: np.ndarray, low: np.ndarray) -> np.ndarray:
    """The area a notification opens: the cash-flow view when money is tight, else a tip about spending, savings,
    bills or the accounts."""
    usual = np.array([T["spending_insights"], T["savings_goals"], T["bills_calendar"], T["accounts_overview"]])
    pick = usual[rng.integers(0, len(usual), len(c))]
    return np.where(low[c, d], T["cash_flow_view"], pick)
