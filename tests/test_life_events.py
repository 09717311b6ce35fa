"""Stage 5, life events, on a small simulated bank: consent, special-category data, evidence, determinism, and
look-alikes that must not fire."""
from __future__ import annotations

import copy
import json
import re
from datetime import date

import duckdb
import numpy as np
import pandas as pd
import pytest

from pipelines import lake
from pipelines import life_events as le
from pipelines.config import Paths
from pipelines.errors import SegoneError

D = date(2026, 11, 19)
BUCKETS = (0, 1, 2, 3)


@pytest.fixture(scope="module")
def bank(tmp_path_factory):
    from pipelines.simulate import simulate_command
    from pipelines.stages import load_history

    home = tmp_path_factory.mktemp("life_events") / "segone"
    home.mkdir()
    mp = pytest.MonkeyPatch()
    mp.setenv("SEGONE_HOME", str(home))
    cfg = le.settings()
    cfg["model"]["n_estimators"] = 60           # a small bank: fewer trees keep the module fast
    mp.setattr(le, "settings", lambda: copy.deepcopy(cfg))
    paths = Paths(home)
    simulate_command(paths, customers=300, days=270, end_date=D, seed=11, fmt="csv")
    load_history(paths)
    trained = le.train_life_events(paths)
    first = {b: le.classify_shard(paths, D, b) for b in BUCKETS}
    yield paths, trained, first
    mp.undo()


def gold(paths: Paths, bucket: int) -> pd.DataFrame:
    path = lake.partition_path(paths, "gold", "life_events", as_of=D.isoformat(), bucket=str(bucket))
    return duckdb.sql(f"select * from read_parquet('{path}/**/*.parquet') order by customer_id, event_type").df()


def all_gold(paths: Paths) -> pd.DataFrame:
    return pd.concat([gold(paths, b) for b in BUCKETS], ignore_index=True)


def test_trained_and_promoted(bank):
    paths, trained, first = bank
    from pipelines import registry

    assert registry.promoted_version(paths, le.FAMILY) == trained["version"]
    assert set(trained["validation"]) == set(le.event_types())
    assert all(m["model_version"] == trained["version"] for m in first.values())
    # per event the model or its rule publishes, with the reason and what was compared
    assert set(trained["on_rule"]) | set(trained["on_model"]) == set(le.event_types())
    for event, decision in trained["decisions"].items():
        assert decision["reason"]
        expected = trained["version"] if decision["method"] == "model" else f"rule:{event}:v1"
        assert decision["model_version"] == expected
        assert all(m["row_model_versions"][event] == expected for m in first.values()
                   if event in m["row_model_versions"])
    rows = all_gold(paths)
    on_rule = rows["event_type"].isin(trained["on_rule"])
    assert rows.loc[on_rule, "probability"].isna().all() and rows.loc[~on_rule, "probability"].notna().all()


def test_no_rows_without_life_events_consent_and_no_travel_without_location(bank):
    paths, _, _ = bank
    rows = all_gold(paths)
    consent = le.consent_state(paths, D, BUCKETS)
    allowed = set(consent.loc[consent["life_events"], "customer_id"])
    located = set(consent.loc[consent["life_events"] & consent["location"], "customer_id"])
    assert len(rows) > 0 and set(rows["customer_id"]) <= allowed
    assert set(consent["customer_id"]) - allowed, "the bank should hold customers without the consent"
    travel = rows[rows["event_type"] == "travel_abroad"]
    assert set(travel["customer_id"]) <= located
    per_customer = rows.groupby("customer_id")["event_type"].nunique()
    expected = pd.Series({c: 8 if c in located else 7 for c in per_customer.index})
    assert (per_customer == expected).all()
    known = rows["probability"].dropna()
    assert known.between(0, 1).all() and not rows.duplicated(["customer_id", "event_type"]).any()


def test_no_feature_uses_a_forbidden_mcc(bank):
    paths, trained, _ = bank
    cfg = le.settings()
    forbidden = set(le.forbidden_mccs(cfg))
    assert {"5912", "8011", "8062", "8099", "8661", "8651"} <= forbidden
    sql = (le.feature_stage.SQL_DIR / "features_life_events.sql").read_text()
    literals = set(re.findall(r"'(\d{4})'", sql))
    assert literals and not literals & forbidden
    assert "not in (select mcc from life_event_forbidden_mccs)" in sql      # filtered before any feature
    for codes in cfg["mcc_signals"].values():
        assert not set(map(str, codes)) & forbidden
    words = ("pharma", "health", "medic", "hospital", "doctor", "religio", "church", "politic", "union", "dating")
    assert not [f for f in trained.get("features", []) + list(le.build_features(
        paths, D, [D], [0]).columns) if any(w in f for w in words)]
    bad = copy.deepcopy(cfg)
    bad["mcc_signals"]["baby"] = ["5641", "5912"]
    with pytest.raises(SegoneError, match="forbidden"):
        le.check_settings(bad)


def test_forbidden_postings_never_reach_a_feature(bank):
    """Pharmacy spend added to a customer's postings leaves every feature unchanged."""
    paths, _, _ = bank
    con = lake.connect()
    try:
        le.register_inputs(con, paths, D, [D], [0])
        before = le.compute_features(con)
        con.execute("create or replace temp table original_transactions as select * from transactions_in")
        customer = before["customer_id"].iloc[0]
        con.execute(f"""
            create or replace temp view transactions_in as
            select * from original_transactions
            union all
            select 'T-PHARMA-' || i, 'A-X', '{customer}', 'core', date '{D.isoformat()}' - cast(i as integer),
                'card', m, 'GB', 'GBP',
                'BOOTS', 'MBOOTS', 'BOOTS PHARMACY PRESCRIPTION', -250.0, 'other', 'BOOTS', false
            from range(1, 40) as r(i), (values ('5912'), ('8062'), ('8661')) as v(m)""")
        after = le.compute_features(con)
    finally:
        con.close()
    pd.testing.assert_frame_equal(before, after)


def _silver_ids(paths: Paths, ids: set[str]) -> int:
    scan = lake.scan_sql(paths, "silver", "transactions")
    con = duckdb.connect()
    con.register("ids", pd.DataFrame({"transaction_id": sorted(ids)}))
    return con.execute(f"select count(distinct transaction_id) from {scan} "
                       f"where transaction_id in (select transaction_id from ids)").fetchall()[0][0]


def _check_evidence(rows: pd.DataFrame) -> set[str]:
    ids: set[str] = set()
    for text in rows.loc[rows["flagged"], "evidence"]:
        evidence = json.loads(text)
        assert evidence["top_features"] and evidence["transaction_ids"]
        assert len(evidence["transaction_ids"]) <= 5
        assert [t["transaction_id"] for t in evidence["transactions"]] == evidence["transaction_ids"]
        ids.update(evidence["transaction_ids"])
    for text in rows.loc[~rows["flagged"], "evidence"].head(50):
        assert "transaction_ids" not in json.loads(text)
    return ids


def test_flagged_rows_carry_evidence_with_real_transactions(bank):
    """The published rows, and (since a small bank's model flags few) the same shard scored with every event's
    threshold lowered to its top fifth: every flag names up to 5 postings that exist in silver."""
    paths, _, _ = bank
    published = all_gold(paths)
    ids = _check_evidence(published)
    model = le.load_model(paths)
    cfg = le.settings()
    consent = le.consent_state(paths, D, BUCKETS)
    consent = consent[consent["life_events"]]
    con = lake.connect()
    try:
        le.register_inputs(con, paths, D, [D], BUCKETS, cfg)
        features = le.compute_features(con)
        features = features[features["customer_id"].isin(consent["customer_id"])].reset_index(drop=True)
        scores = model.predict(features)
        for event, info in model.events.items():
            if model.boosters.get(event) is None:
                continue
            info["threshold"] = float(max(np.quantile(scores.loc[scores["event_type"] == event, "probability"], 0.8),
                                          1e-9))
        rows = le.score_rows(model, con, features, consent, D, cfg)
    finally:
        con.close()
    assert rows["flagged"].sum() >= 3
    ids |= _check_evidence(rows)
    assert ids and _silver_ids(paths, ids) == len(ids)
    signals = [t["signal"] for text in rows.loc[rows["flagged"], "evidence"] for t in json.loads(text)["transactions"]]
    assert set(signals) - {"largest_recent_outflow"}, "some flags should be backed by their event's own signals"


def test_two_runs_give_the_same_rows(bank):
    paths, _, first = bank
    before = gold(paths, BUCKETS[0])
    again = le.classify_shard(paths, D, BUCKETS[0])
    assert again["rows"] == first[BUCKETS[0]]["rows"]
    pd.testing.assert_frame_equal(before, gold(paths, BUCKETS[0]))


def test_hand_made_lookalikes_are_not_flagged(bank):
    paths, _, _ = bank
    model = le.load_model(paths)
    features = le.build_features(paths, D, [D], BUCKETS)
    scored = model.predict(features)
    quiet_ids = set(features["customer_id"]) - set(scored.loc[scored["flagged"], "customer_id"])
    quiet = features[features["customer_id"].isin(quiet_ids)]
    # customers with no life-event signal at all: no flag, no signal posting of any kind
    signal_columns = [c for c in features.columns if re.match(r"n_(removals|surveyor|baby|jewellery|wedding_venue|"
                                                               r"caterer|bridal|solicitor|tenancy_deposit|airline|"
                                                               r"hotel|furniture)_", c)]
    quiet = quiet[(quiet[signal_columns] == 0).all(axis=1)].head(20).reset_index(drop=True)
    assert len(quiet) >= 5

    def variant(changes: dict[str, float]) -> pd.DataFrame:
        out = quiet.copy()
        for column, value in changes.items():
            out[column] = value
        return le.add_rule_features(out, le.settings())   # the rule indicators follow the changed features

    one_off_purchase = variant({"n_furniture_14d": 1, "n_furniture_30d": 1, "n_furniture_60d": 1,
                                "n_furniture_90d": 1, "amount_furniture_90d": 950.0, "max_card_amount_30d": 950.0})
    holiday = variant({"n_airline_30d": 1, "n_airline_60d": 1, "n_airline_90d": 1, "amount_airline_90d": 300.0,
                       "n_hotel_30d": 1, "n_hotel_60d": 1, "n_hotel_90d": 1, "amount_hotel_90d": 400.0})
    baby_gift = variant({"n_baby_14d": 1, "n_baby_30d": 1, "n_baby_60d": 1, "n_baby_90d": 1,
                         "amount_baby_90d": 30.0})
    cases = [(one_off_purchase, ["moving_home", "buying_home"]),
             (holiday, ["marriage", "moving_home", "buying_home", "new_baby"]),
             (baby_gift, ["new_baby"])]
    for frame, events in cases:
        predicted = model.predict(frame, events)
        assert not predicted["flagged"].any(), predicted[predicted["flagged"]]


def test_each_model_reads_its_own_signals_and_rule_and_no_other_events_rule():
    cfg = le.settings()
    frame = pd.DataFrame({"customer_id": ["C1"], "cutoff": [pd.Timestamp(D)],
                          **{c: [0.0] for c in ["age_years", "n_wedding_venue_90d", "n_caterer_30d", "n_baby_60d",
                                                "n_foreign_ccy_14d", "n_airline_30d", "n_new_salary_payers_45d",
                                                "salary_stopped", "n_redundancy_60d", "n_removals_30d",
                                                "n_tenancy_deposit_30d", "n_surveyor_90d", "n_solicitor_90d",
                                                "n_bridal_90d", "n_new_pension_payers_60d", "n_caterer_90d"]}})
    frame = le.add_rule_features(frame, cfg)
    assert {f"rule_{e}" for e in cfg["events"]} <= set(frame.columns)
    columns = [c for c in frame.columns if c not in le.KEYS]
    marriage = le.event_feature_columns(cfg, "marriage", columns)
    assert set(marriage) == {"age_years", "n_wedding_venue_90d", "n_caterer_30d", "n_caterer_90d", "n_bridal_90d",
                             "rule_marriage"}
    for event in cfg["events"]:
        chosen = le.event_feature_columns(cfg, event, columns)
        assert [c for c in chosen if c.startswith("rule_")] == [f"rule_{event}"]
        if "location" not in cfg["events"][event]["consent"]:
            assert not [c for c in chosen if le.is_location_feature(c, cfg)]
    assert le.event_monotone(cfg, "marriage", marriage) == {"n_wedding_venue_90d": 1, "n_caterer_30d": 1, "n_caterer_90d": 1,
                                                           "n_bridal_90d": 1, "rule_marriage": 1}
    travel = le.event_feature_columns(cfg, "travel_abroad", columns)
    assert {"n_foreign_ccy_14d", "n_airline_30d", "rule_travel_abroad"} <= set(travel)


def test_ranking_score_breaks_calibration_ties_by_the_raw_score_and_keeps_real_ties():
    probability = pd.Series([0.9, 0.9, 0.9, 0.1, 0.1])
    raw = pd.Series([0.95, 0.99, 0.95, 0.2, 0.3])
    ranks = le.ranking_score(probability, raw)
    assert ranks[1] > ranks[0] == ranks[2] > ranks[4] > ranks[3]
