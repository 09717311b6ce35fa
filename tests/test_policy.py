"""Learning: the bandit's log is the policy's exact distribution, a learned model replaces the catalogue's priors
in the arbitration, the contextual model learns response by context and is cross-fitted, and a challenger is
promoted only when the lower bound of its offline estimate beats the champion."""
from __future__ import annotations

from datetime import date

import numpy as np
import pandas as pd
import pytest

from models.policy_model import PolicyModel, PolicyParams, softplus
from pipelines import decide
from pipelines.actions import load_catalogue
from pipelines.config import load_config
from pipelines.policy import (Scorer, customer_folds, evaluate, evaluation_nights, promotion_decision,
                             recent_window)

D = date(2026, 11, 20)
CATALOGUE = load_catalogue()


def _pol(**overrides):
    out = dict(decide.policy())
    out["control_share"] = 0.0
    out.update(overrides)
    return out


def test_the_bandit_log_is_the_policy_distribution_at_each_slot():
    context = decide.synthetic_context(3000, seed=5)
    pol = _pol()
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol)
    log = decisions.bandit_log
    nba = decisions.next_best_actions
    eps = float(pol["exploration"]["epsilon"])
    assert len(log) > 500
    m = log["n_candidates"].to_numpy()
    first = np.array([c[0] == a for c, a in zip(log["candidates"], log["action_id"])])
    assert np.allclose(log["logging_probability"], (1 - eps) * first + eps / m, atol=1e-6)
    assert all(a in c for c, a in zip(log["candidates"], log["action_id"]))
    assert (log["is_exploration"] == ~first).all()
    # the logged candidates come in the arbitration's order: by catalogue priority, best first
    assert all(list(s) == sorted(s, reverse=True) for s in log["catalogue_scores"])
    # one row per published non-protective recommendation, and one per pick of the no-contact arm, nothing else
    others = nba[nba["action_class"] != "protective"]
    arm = log["action_id"] == "no_contact"
    assert arm.sum() > 10 and log.loc[arm, "recommendation_id"].isna().all() and log.loc[arm, "rank"].isna().all()
    assert sorted(log.loc[~arm, "recommendation_id"]) == sorted(others["recommendation_id"])
    merged = log.merge(others, on="recommendation_id", suffixes=("", "_nba"))
    assert np.allclose(merged["logging_probability"], merged["logging_probability_nba"], atol=1e-6)
    assert (merged["rank"] == merged["rank_nba"]).all()


def test_the_no_contact_arm_under_the_catalogue_priors_is_exploration_only_and_ends_the_slots():
    context = decide.synthetic_context(3000, seed=5)
    pol = _pol()
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol)
    log = decisions.bandit_log
    arm = log[log["action_id"] == "no_contact"]
    # the catalogue never prefers it: last among the candidates, scored -1, picked only by exploration
    assert (log["candidates"].map(lambda c: c[-1]) == "no_contact").all()
    assert (log["catalogue_scores"].map(lambda c: c[-1]) == -1.0).all()
    assert arm["is_exploration"].all()
    # after it, the customer has no later slot; the customers it stopped are still in decision_context
    last_slot = log.groupby("customer_id")["slot"].max()
    assert (last_slot.reindex(arm["customer_id"]).to_numpy() == arm["slot"].to_numpy()).all()
    assert set(arm["customer_id"]) <= set(decisions.decision_context["customer_id"])
    assert decisions.metrics["n_no_contact"] == arm["customer_id"].nunique()
    assert decisions.metrics["n_no_contact_greedy"] == 0
    # the candidates it held back say why
    dl = decisions.decision_log
    held = dl[dl["customer_id"].isin(arm["customer_id"]) & dl["reason"].str.contains("no further contact", na=False)]
    assert len(held) and (held["stage"] == "arbitration").all()
    assert (held["reason"] == "not sent: exploration chose no further contact for this customer tonight").all()


def test_with_the_arm_off_the_bandit_fills_every_slot():
    context = decide.synthetic_context(2000, seed=5)
    pol = _pol(exploration={**decide.policy()["exploration"], "no_contact": {"enabled": False}})
    log = decide.decide_frame(context, D, None, CATALOGUE, pol).bandit_log
    assert len(log) and not (log["action_id"] == "no_contact").any()
    assert not log["candidates"].map(lambda c: "no_contact" in c).any()


class _LosingScorer:
    """A learned policy that expects every action but the ISA to lose money (complaints and unsubscribes)."""

    version = "policy-losing"

    def score(self, ctx, ci, aj, catalogue):
        ids = np.array([x.id for x in catalogue], dtype=object)[aj]
        expected = np.where(ids == "isa", 5.0, -2.0)
        return {"p_accept": np.full(len(ci), 0.1), "value": np.full(len(ci), 1.0), "expected": expected,
                "priority": np.round(softplus(expected), 9)}


def test_a_learned_policy_withholds_contacts_it_expects_to_lose_on():
    context = decide.synthetic_context(3000, seed=8)
    pol = _pol()
    decisions = decide.decide_frame(context, D, None, CATALOGUE, pol, scorer=_LosingScorer())
    log = decisions.bandit_log
    eps = float(pol["exploration"]["epsilon"])
    first = log[log["slot"] == 1]
    with_isa = first["candidates"].map(lambda c: "isa" in c)
    # the arm ranks after the ISA (expected +5) and before every losing action
    assert (first.loc[with_isa, "candidates"].map(lambda c: c[:2]) .map(tuple) == ("isa", "no_contact")).all()
    assert (first.loc[~with_isa, "candidates"].map(lambda c: c[0]) == "no_contact").all()
    greedy_arm = first[~with_isa & ~first["is_exploration"]]
    assert len(greedy_arm) > 100 and (greedy_arm["action_id"] == "no_contact").all()
    assert np.allclose(greedy_arm["logging_probability"], 1 - eps + eps / greedy_arm["n_candidates"], atol=1e-6)
    # customers who got the arm greedily have no non-protective recommendation
    nba = decisions.next_best_actions
    stopped = set(greedy_arm["customer_id"])
    assert not ((nba["customer_id"].isin(stopped)) & (nba["action_class"] != "protective")).any()
    dl = decisions.decision_log
    why = dl[dl["customer_id"].isin(stopped) & dl["reason"].str.startswith("not sent: the learned policy", na=False)]
    assert why["customer_id"].nunique() == len(stopped)
    assert decisions.metrics["n_no_contact_greedy"] >= len(stopped)


class _FixedScorer:
    """A stand-in learned policy: the value of each action is fixed (isa is worth the most)."""

    version = "policy-test"

    def score(self, ctx, ci, aj, catalogue):
        ids = np.array([x.id for x in catalogue], dtype=object)[aj]
        expected = np.where(ids == "isa", 50.0, 1.0)
        return {"p_accept": np.full(len(ci), 0.2), "value": expected / 0.2, "expected": expected,
                "priority": softplus(expected)}


def test_a_learned_policy_replaces_the_catalogue_priors_in_the_arbitration():
    context = decide.synthetic_context(3000, seed=6)
    pol = _pol()
    plain = decide.decide_frame(context, D, None, CATALOGUE, pol)
    learned = decide.decide_frame(context, D, None, CATALOGUE, pol, scorer=_FixedScorer())
    log = learned.bandit_log
    with_isa = log[log["candidates"].map(lambda c: "isa" in c) & (log["slot"] == 1)]
    assert len(with_isa) > 20
    assert (with_isa["candidates"].map(lambda c: c[0]) == "isa").all()          # the greedy choice is the model's
    assert (with_isa.loc[~with_isa["is_exploration"], "action_id"] == "isa").all()
    nba = learned.next_best_actions
    assert (nba["policy_version"] == f"{pol['policy_version']}+policy-test").all()
    isa = nba[nba["action_id"] == "isa"]
    assert np.allclose(isa["propensity"], 0.2) and np.allclose(isa["value"], 250.0)
    # protective actions still come first, the funnel is the same, and the probabilities are still exact
    early = ["eligibility", "applicability", "suitability", "consent"]      # caps follow the ranking: not compared
    assert plain.decision_log["stage"].isin(early).sum() == learned.decision_log["stage"].isin(early).sum()
    first_protective = nba.groupby("customer_id").apply(
        lambda g: g.sort_values("rank")["action_class"].tolist(), include_groups=False)
    assert all(cls == sorted(cls, key=lambda c: c != "protective") for cls in first_protective)
    eps = float(pol["exploration"]["epsilon"])
    head = np.array([c[0] == a for c, a in zip(log["candidates"], log["action_id"])])
    assert np.allclose(log["logging_probability"], (1 - eps) * head + eps / log["n_candidates"], atol=1e-6)


def _training(n: int, seed: int):
    """Logged decisions where savers accept the savings action and nobody else does."""
    rng = np.random.default_rng(seed)
    saver = rng.random(n) < 0.4
    actions = np.array(["safe_to_save_sweep", "credit_card", "budgeting_tools"], dtype=object)
    a = actions[rng.integers(0, 3, n)]
    p = np.where((a == "safe_to_save_sweep") & saver, 0.5, np.where(a == "budgeting_tools", 0.1, 0.02))
    accepted = rng.random(n) < p
    value = np.where(accepted, np.where(a == "safe_to_save_sweep", 8.0, 3.0), 0.0) + rng.normal(0, 0.5, n)
    frame = pd.DataFrame({"customer_id": [f"C{i:07d}" for i in range(n)], "savings_balance": saver * 5000.0,
                          "p_shortfall_30": rng.random(n) * 0.2})
    return frame, a, accepted, value


def test_the_policy_model_learns_who_takes_what_and_is_cross_fitted(tmp_path):
    frame, a, accepted, value = _training(6000, 1)
    folds = customer_folds(frame["customer_id"])
    model = PolicyModel.fit(frame, a, accepted, np.where(accepted, value, np.nan), np.zeros(len(a)),
                            np.full(len(a), 1 / 3), folds, [x.id for x in CATALOGUE],
                            ["savings_balance", "p_shortfall_30"], {x.id: x.prior_propensity for x in CATALOGUE},
                            PolicyParams(rounds=60))
    assert model.folds[0].n_train + model.folds[1].n_train == len(a)
    assert model.folds[0].accept is not None and model.folds[0].value is not None
    test = pd.DataFrame({"customer_id": ["A", "B"], "savings_balance": [5000.0, 0.0], "p_shortfall_30": [0.1, 0.1]})
    out = model.score(test, ["safe_to_save_sweep", "credit_card"], np.array([0, 0]))
    assert out["p_accept"][0, 0] > 0.35 and out["p_accept"][1, 0] < 0.1
    assert out["expected"][0, 0] > 5 * out["expected"][0, 1]
    # each fold's model scores only the customers it was not trained on; saved and loaded it scores the same
    other = model.score(test, ["safe_to_save_sweep"], np.array([1, 1]))
    assert not np.allclose(other["p_accept"], out["p_accept"][:, :1])
    model.save(tmp_path / "m")
    again = PolicyModel.load(tmp_path / "m")
    assert np.allclose(again.score(test, ["safe_to_save_sweep", "credit_card"], np.array([0, 0]))["expected"],
                       out["expected"])
    with pytest.raises(ValueError, match="logging probabilities"):
        PolicyModel.fit(frame, a, accepted, value, np.zeros(len(a)), np.zeros(len(a)), folds, ["x"], [], {})


def _slots(n: int, seed: int, mislog: bool = False):
    """Logged slot decisions between three candidates, epsilon-greedy on catalogue scores that favour the worst."""
    rng = np.random.default_rng(seed)
    eps = 0.3
    cands = ["credit_card", "budgeting_tools", "safe_to_save_sweep"]        # catalogue order: worst first
    worth = {"credit_card": 0.5, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}
    probs = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    pick = rng.choice(3, size=n, p=probs)
    action = np.array(cands, dtype=object)[pick]
    reward = np.array([worth[x] for x in action]) + rng.normal(0, 2.0, n)
    ids = [f"C{i % (n // 2):07d}" for i in range(n)]
    slots = pd.DataFrame({"customer_id": ids, "as_of": D, "slot": 1, "recommendation_id": [f"R{i}" for i in range(n)],
                          "action_id": action, "logging_probability": (probs[pick] if not mislog else 1 / 3),
                          "candidates": [cands] * n, "catalogue_scores": [[3.0, 2.0, 1.0]] * n, "epsilon": eps,
                          "policy_version": "nba-v1", "value": reward})
    recs = pd.DataFrame({"customer_id": sorted(set(ids)), "as_of": D, "savings_balance": 0.0})
    return recs, slots


class _ValueScorer(Scorer):
    """A challenger that knows each action's worth (no model files needed)."""

    def __init__(self, worth: dict[str, float]):
        self.version = "policy-challenger"
        self.worth = worth

    def score(self, ctx, ci, aj, catalogue):
        ids = np.array([x.id for x in catalogue], dtype=object)[aj]
        expected = np.array([self.worth.get(i, 0.0) for i in ids])
        return {"p_accept": np.full(len(ci), 0.5), "value": expected * 2, "expected": expected,
                "priority": softplus(expected)}


PROMOTION = {"estimator": "dr", "level": 0.95, "min_ess_share": 0.02}


def test_a_better_challenger_is_promoted_and_an_equal_one_is_not():
    recs, slots = _slots(4000, 3)
    better = evaluate(_ValueScorer({"credit_card": 0.5, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}), None,
                      recs, slots)
    # the champion is the catalogue policy that logged the data: its IPS estimate is the mean reward
    assert better["champion"]["ips"]["estimate"] == pytest.approx(slots["value"].mean())
    assert better["log_ok"]
    assert better["challenger"]["dr"]["ci_low"] > better["champion"]["dr"]["estimate"]
    promoted, reason = promotion_decision(better, PROMOTION)
    assert promoted and "beats" in reason
    # a challenger that ranks like the catalogue earns what the champion earns: kept out
    same = evaluate(_ValueScorer({"credit_card": 3.0, "budgeting_tools": 2.0, "safe_to_save_sweep": 1.0}), None,
                    recs, slots)
    promoted, reason = promotion_decision(same, PROMOTION)
    assert not promoted and "does not beat" in reason


def test_a_log_with_wrong_probabilities_blocks_the_promotion():
    recs, slots = _slots(4000, 4, mislog=True)
    result = evaluate(_ValueScorer({"credit_card": 0.5, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}), None,
                      recs, slots)
    assert not result["log_ok"]
    promoted, reason = promotion_decision(result, PROMOTION)
    assert not promoted and reason.startswith("the log failed its checks")


def _mostly_agreeing_slots(n: int, seed: int, share_disagree: float = 0.2, noise_agree: float = 40.0):
    """A log where the catalogue and a challenger that knows each action's worth agree on most decisions, whose
    rewards are very noisy (a launch night's one-off products), and disagree on the rest, quiet ones: the catalogue
    ranks credit first there, the challenger the sweep. The challenger's true gain per decision:
    share_disagree x (1 - eps) x (6 - 0.5)."""
    rng = np.random.default_rng(seed)
    eps = 0.3
    worth = {"credit_card": 0.5, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}
    disagree = rng.random(n) < share_disagree
    agree_order = ["safe_to_save_sweep", "budgeting_tools", "credit_card"]
    disagree_order = ["credit_card", "budgeting_tools", "safe_to_save_sweep"]
    probs = np.array([1 - eps + eps / 3, eps / 3, eps / 3])
    col = rng.choice(3, size=n, p=probs)
    cands = [disagree_order if d else agree_order for d in disagree]
    action = np.array([c[k] for c, k in zip(cands, col)], dtype=object)
    noise = np.where(disagree, 2.0, noise_agree) * rng.standard_normal(n)
    reward = np.array([worth[x] for x in action]) + noise
    ids = [f"C{i % (n // 2):07d}" for i in range(n)]
    slots = pd.DataFrame({"customer_id": ids, "as_of": D, "slot": 1, "recommendation_id": [f"R{i}" for i in range(n)],
                          "action_id": action, "logging_probability": probs[col], "candidates": cands,
                          "catalogue_scores": [[3.0, 2.0, 1.0]] * n, "epsilon": eps, "policy_version": "nba-v1",
                          "value": reward})
    recs = pd.DataFrame({"customer_id": sorted(set(ids)), "as_of": D, "savings_balance": 0.0})
    return recs, slots, share_disagree * (1 - eps) * 5.5


def test_the_paired_rule_promotes_a_better_challenger_that_two_overlapping_intervals_would_not():
    recs, slots, gain = _mostly_agreeing_slots(4000, 11)
    result = evaluate(_ValueScorer({"credit_card": 0.5, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}), None,
                      recs, slots)
    diff = result["difference"]["dr"]
    assert diff["ci_low"] <= gain <= diff["ci_high"]
    assert result["greedy_agreement"] == pytest.approx(1 - (slots["candidates"].str[0] == "credit_card").mean())
    # the challenger's own interval is wide (the shared noise): its lower bound is below the champion's estimate
    assert result["challenger"]["dr"]["ci_low"] < result["champion"]["dr"]["estimate"]
    assert not promotion_decision(result, {**PROMOTION, "rule": "separate"})[0]
    promoted, reason = promotion_decision(result, {**PROMOTION, "rule": "paired"})
    assert promoted and "beats" in reason and "same 4000 decisions" in reason
    with pytest.raises(Exception, match="paired or separate"):
        promotion_decision(result, {**PROMOTION, "rule": "best"})


def test_a_challenger_no_better_is_not_promoted_on_the_paired_difference():
    recs, slots, _ = _mostly_agreeing_slots(4000, 12)
    # it ranks like the catalogue where they disagreed (credit first): the same policy, difference exactly zero
    same = evaluate(_ValueScorer({"credit_card": 9.0, "budgeting_tools": 2.0, "safe_to_save_sweep": 6.0}), None,
                    recs, slots)
    promoted, reason = promotion_decision(same, PROMOTION)
    assert not promoted and "does not beat" in reason


def test_the_challenger_is_judged_on_the_most_recent_nights():
    nights = [date(2026, 11, 20) + pd.Timedelta(days=k) for k in range(10)]
    slots = pd.DataFrame({"as_of": [n for n in nights for _ in range(3)], "value": 1.0})
    recent = recent_window(slots, 7)
    assert sorted(set(recent["as_of"])) == nights[3:]
    assert len(recent_window(slots, 30)) == len(slots) and recent_window(slots.iloc[0:0], 7).empty
    assert evaluation_nights({"evaluation_nights": 3}) == 3
    period = load_config("learning")["retrain"]["every_nights"]                              # the retraining period
    assert evaluation_nights({}) == period == evaluation_nights({"evaluation_nights": None})
    with pytest.raises(Exception, match="evaluation_nights"):
        evaluation_nights({"evaluation_nights": 0})


def test_the_response_history_is_the_customers_own_answers():
    """contact_state's per-customer history (gold decision_context's response columns), on hand-made answers."""
    from datetime import datetime, timezone

    def at(days_ago):
        return datetime(D.year, D.month, D.day, 12, tzinfo=timezone.utc) - pd.Timedelta(days=days_ago)

    rows = [  # A: three delivered, one opened then accepted, one declined, one ignored; B: one delivered 20 days ago
        ("r1", "A", "isa", "email", "delivered", at(10)), ("r1", "A", "isa", "email", "opened", at(9)),
        ("r1", "A", "isa", "email", "accepted", at(9)),
        ("r2", "A", "budgeting_tools", "push", "delivered", at(3)), ("r2", "A", "budgeting_tools", "push", "declined", at(2)),
        ("r3", "A", "safe_to_save_sweep", "email", "delivered", at(1)),
        ("r4", "B", "isa", "email", "delivered", at(20)),
        ("r5", "C", "isa", "email", "delivered", at(400)),     # beyond the lookback
    ]
    responses = pd.DataFrame(rows, columns=["recommendation_id", "customer_id", "action_id", "channel", "event",
                                            "event_at"])
    state = decide.contact_state(responses, pd.Series(["A", "B", "C", "D"]), CATALOGUE, D, decide.policy())
    h = state.history
    assert h["contacts_delivered"].tolist() == [3, 1, 0, 0]
    assert np.allclose(h["engaged_share"][:2], [2 / 3, 0.0]) and np.isnan(h["engaged_share"][2:]).all()
    assert h["n_accepted"].tolist() == [1, 0, 0, 0] and h["n_declined"].tolist() == [1, 0, 0, 0]
    protective = {x.id for x in CATALOGUE if x.action_class == "protective"}
    assert h["contacts_7d"][0] == sum(a not in protective for a in ("budgeting_tools", "safe_to_save_sweep"))
    assert h["days_since_contact"][0] == 1 and h["days_since_contact"][1] == 20
    assert np.isnan(h["days_since_contact"][2:]).all()
    # and the decision context carries them for every customer decided for
    frame = decide.decide_frame(decide.synthetic_context(50, seed=1), D, None, CATALOGUE, _pol()).decision_context
    assert {"engaged_share", "contacts_7d", "days_since_contact"} <= set(frame.columns)


def test_withholding_a_losing_contact_is_valued_offline_and_promoted():
    """The no-contact arm in the offline evaluation: its value is 0 and it needs no reward model. Logged under the
    catalogue (the arm last, picked by exploration only), a challenger that expects the contact to lose money
    withholds it, and both policies' estimates contain their true values."""
    rng = np.random.default_rng(11)
    n, eps = 6000, 0.3
    cands = ["credit_card", "no_contact"]
    probs = np.array([1 - eps + eps / 2, eps / 2])
    pick = rng.choice(2, size=n, p=probs)
    reward = np.where(pick == 0, -1.0 + rng.normal(0, 1.0, n), 0.0)
    ids = [f"C{i % (n // 3):07d}" for i in range(n)]
    slots = pd.DataFrame({"customer_id": ids, "as_of": D, "slot": 1,
                          "recommendation_id": [f"R{i}" if p == 0 else None for i, p in enumerate(pick)],
                          "action_id": np.array(cands, dtype=object)[pick], "logging_probability": probs[pick],
                          "candidates": [cands] * n, "catalogue_scores": [[3.0, -1.0]] * n, "epsilon": eps,
                          "policy_version": "nba-v1", "value": reward})
    recs = pd.DataFrame({"customer_id": sorted(set(ids)), "as_of": D, "savings_balance": 0.0})
    result = evaluate(_ValueScorer({"credit_card": -1.0}), None, recs, slots)
    assert result["log_ok"]
    truth_challenger, truth_champion = -1.0 * probs[1], -1.0 * probs[0]    # it withholds; the catalogue contacts
    for name, truth in (("challenger", truth_challenger), ("champion", truth_champion)):
        dr = result[name]["dr"]
        assert dr["ci_low"] <= truth <= dr["ci_high"], (name, dr)
    assert result["difference"]["dr"]["ci_low"] > 0
    promoted, _ = promotion_decision(result, PROMOTION)
    assert promoted
    # a challenger that expects the contact to pay ranks like the catalogue: nothing to gain
    same = evaluate(_ValueScorer({"credit_card": 1.0}), None, recs, slots)
    assert not promotion_decision(same, PROMOTION)[0]


class _SaverScorer(Scorer):
    """Expects a credit card to lose money with a saver (savings_balance > 0) and to pay otherwise."""

    def __init__(self):
        self.version = "policy-saver"

    def score(self, ctx, ci, aj, catalogue):
        saver = ctx["savings_balance"].to_numpy(float)[ci] > 0
        expected = np.where(saver, -1.0, 1.0)
        return {"p_accept": np.full(len(ci), 0.5), "value": np.abs(expected) * 2, "expected": expected,
                "priority": softplus(expected)}


def test_each_decision_is_judged_in_its_own_context_even_when_nothing_was_sent():
    """A customer whose only decision was the no-contact arm has no recommendation: their context must come from the
    decision itself (gold decision_context), or the target policy sees it only when the log did not pick the arm and
    its importance weights no longer average 1 (the log check then fails a correct log)."""
    from pipelines.policy import features

    rng = np.random.default_rng(5)
    n, eps = 8000, 0.3
    cands = ["credit_card", "no_contact"]
    probs = np.array([1 - eps + eps / 2, eps / 2])
    pick = rng.choice(2, size=n, p=probs)
    ids = [f"C{i:07d}" for i in range(n)]                          # one decision per customer and night
    slots = pd.DataFrame({"customer_id": ids, "as_of": D, "slot": 1,
                          "recommendation_id": [f"R{i}" if p == 0 else None for i, p in enumerate(pick)],
                          "action_id": np.array(cands, dtype=object)[pick], "logging_probability": probs[pick],
                          "candidates": [cands] * n, "catalogue_scores": [[3.0, -1.0]] * n, "epsilon": eps,
                          "policy_version": "nba-v1",
                          "value": np.where(pick == 0, -1.0 + rng.normal(0, 1.0, n), 0.0)})
    context = {name: 0.0 for name in features()} | {"savings_balance": 500.0}
    for name, value in context.items():
        slots[name] = value                                        # as learning_data reads them
    sent = slots[pick == 0]
    recs = pd.DataFrame({"customer_id": sent["customer_id"], "as_of": D} | context)   # the recommendations' only
    result = evaluate(_SaverScorer(), None, recs, slots)
    assert result["log_ok"], result["log_check"]
    dr = result["challenger"]["dr"]
    assert dr["ci_low"] <= -1.0 * probs[1] <= dr["ci_high"]
    # without the decision's own context the same log looks wrong
    bare = slots.drop(columns=list(context))
    assert not evaluate(_SaverScorer(), None, recs, bare)["log_ok"]
