"""The simulator's open-banking files: the envelope of DESIGN section 4, bodies valid against the official OBIE
v3.1.11 / v4.0 OpenAPI schemas, fetches only under consent, overlapping windows, pages and missing resources."""
from __future__ import annotations

import datetime as dt
import json
import re
from functools import lru_cache
from pathlib import Path

import jsonschema
import pandas as pd
import pytest
import referencing
import yaml

from pipelines.config import Paths
from pipelines.sources.simulate import simulate

END = dt.date(2026, 11, 20)
OBIE = Path("/work/shared/reference/obie")
SPECS = {"3.1": OBIE / "account-info-openapi_v3.1.11r5.yaml", "4.0": OBIE / "account-info-openapi_v4.0-Update-4.yaml"}
SCHEMAS = {"accounts": "OBReadAccount6", "balances": "OBReadBalance1", "transactions": "OBReadTransaction6",
           "standing_orders": "OBReadStandingOrder6", "direct_debits": "OBReadDirectDebit2",
           "scheduled_payments": "OBReadScheduledPayment3"}
DATE_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})")
DATE_TIME_FIELDS = re.compile(r"DateTime$|^OpeningDate$|^fetched_at$")


@pytest.fixture(scope="module")
def bank(tmp_path_factory: pytest.TempPathFactory) -> Paths:
    paths = Paths(tmp_path_factory.mktemp("obbank"))
    simulate(paths, customers=600, days=50, end_date=END, seed=5, fmt="csv", chunk_size=300)
    return paths


def _files(paths: Paths) -> list[Path]:
    return sorted(paths.landing.glob("*/openbanking/*.json"))


@lru_cache(maxsize=None)
def _registry(version: str) -> referencing.Registry:
    spec = yaml.load(SPECS[version].read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    resource = referencing.Resource.from_contents(spec, default_specification=referencing.jsonschema.DRAFT4)
    return referencing.Registry().with_resource("urn:obie", resource)


@lru_cache(maxsize=None)
def _validator(version: str, schema: str) -> jsonschema.protocols.Validator:
    """A validator for one component schema of the official spec (its $refs resolved inside the spec)."""
    return jsonschema.Draft4Validator({"$ref": f"urn:obie#/components/schemas/{schema}"}, registry=_registry(version))


def _date_times(node: object, key: str = "") -> list[str]:
    if isinstance(node, dict):
        return [v for k, child in node.items() for v in _date_times(child, k)]
    if isinstance(node, list):
        return [v for child in node for v in _date_times(child, key)]
    return [node] if DATE_TIME_FIELDS.search(key) and isinstance(node, str) else []


def test_envelopes_and_bodies_follow_the_obie_schemas(bank: Paths) -> None:
    files = _files(bank)
    assert len(files) > 50
    versions: dict[str, int] = {"3.1": 0, "4.0": 0}
    checked = 0
    for path in files[::5]:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert list(doc)[:5] == ["customer_id", "provider", "consent_id", "fetched_at", "accounts"]
        assert path.name.startswith(f"{doc['customer_id']}-{doc['provider']}-")
        version = "4.0" if "/v4.0/" in doc["accounts"]["Links"]["Self"] else "3.1"
        versions[version] += 1
        for resource, schema in SCHEMAS.items():
            bodies = doc.get(resource)
            if bodies is None:
                continue
            for body in bodies if isinstance(bodies, list) else [bodies]:
                errors = list(_validator(version, schema).iter_errors(body))
                assert not errors, (path.name, resource, errors[0].message)
                checked += 1
        bad = [v for v in _date_times(doc) if not DATE_TIME.fullmatch(v)]
        assert not bad, (path.name, bad[:3])
    assert checked > 100
    assert 0.08 < versions["4.0"] / sum(versions.values()) < 0.35


def test_v31_and_v40_codes(bank: Paths) -> None:
    statuses: dict[str, set[str]] = {"3.1": set(), "4.0": set()}
    for path in _files(bank):
        doc = json.loads(path.read_text(encoding="utf-8"))
        version = "4.0" if "/v4.0/" in doc["accounts"]["Links"]["Self"] else "3.1"
        pages = doc["transactions"] if isinstance(doc["transactions"], list) else [doc["transactions"]]
        statuses[version] |= {t["Status"] for p in pages for t in p["Data"]["Transaction"]}
        statuses[version] |= {b["Type"] for b in doc["balances"]["Data"]["Balance"]}
    assert statuses["3.1"] >= {"Booked", "Pending", "ClosingBooked", "InterimAvailable"}
    assert statuses["4.0"] >= {"BOOK", "CLBD", "ITAV"}


def test_fetches_overlap_page_and_happen_only_under_consent(bank: Paths) -> None:
    consents = pd.concat([pd.read_csv(p, dtype=str, keep_default_na=False)
                          for p in bank.landing.glob("*/consents.csv")])
    consents = consents[consents.purpose == "open_banking"].copy()
    consents["recorded"] = pd.to_datetime(consents.recorded_at, utc=True, format="ISO8601")
    consents["expires"] = pd.to_datetime(consents.expires_at.replace("", None), utc=True, format="ISO8601")
    seen: dict[tuple[str, str], set[str]] = {}
    overlaps = pages = missing = pending_then_booked = 0
    pending: dict[str, str] = {}
    for path in _files(bank):
        doc = json.loads(path.read_text(encoding="utf-8"))
        fetched = pd.Timestamp(doc["fetched_at"]).tz_convert("UTC")
        mine = consents[(consents.customer_id == doc["customer_id"]) & (consents.recorded <= fetched)]
        latest = mine.sort_values("recorded").iloc[-1]
        assert latest.granted == "true" and latest.expires > fetched, path.name
        body = doc["transactions"]
        pages += isinstance(body, list)
        if isinstance(body, list):
            assert "Next" in body[0]["Links"] and body[0]["Meta"]["TotalPages"] == 2
        missing += len({"standing_orders", "direct_debits", "scheduled_payments"} - set(doc))
        txns = [t for p in (body if isinstance(body, list) else [body]) for t in p["Data"]["Transaction"]]
        ids = {t["TransactionId"] for t in txns}
        key = (doc["customer_id"], doc["provider"])
        overlaps += bool(seen.get(key, set()) & ids)
        seen.setdefault(key, set()).update(ids)
        for t in txns:
            if t["Status"] in ("Pending", "PDNG"):
                pending[t["TransactionId"]] = fetched
            elif t["TransactionId"] in pending:
                pending_then_booked += 1
    assert overlaps > 20 and pages > 0 and missing > 0 and pending_then_booked > 0


def test_nightly_fetches_are_made_on_d(bank: Paths) -> None:
    nightly = list((bank.landing_day(END.isoformat()) / "openbanking").glob("*.json"))
    assert nightly
    for path in nightly:
        doc = json.loads(path.read_text(encoding="utf-8"))
        assert doc["fetched_at"].startswith(END.isoformat())
    history = list((bank.landing_history / "openbanking").glob("*.json"))
    assert all(json.loads(p.read_text(encoding="utf-8"))["fetched_at"] < END.isoformat() for p in history)
