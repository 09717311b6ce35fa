"""Stage 3b, understanding customer messages: silver messages -> intent, sentiment, distress and bank signals per
message (gold `message_insights`) -> per-customer features for decide (gold `message_signals`), per customer shard.

Consent (DESIGN principle 2): only customers whose `message_analysis` consent holds on D are read; a customer without
it gets no insight and no signal, and one who withdraws stops counting from the next run (earlier insights are not
read again). The text a customer wrote stays in silver: the gold tables, the run metrics and the logs carry the
intent, the scores and the signals' plain-language reasons, never the text.

Also the training of the intent model (`train_messages`, registry family `messages`), the labelled backtest
(`segone backtest messages --labelled FILE`) and the benchmark (`segone bench messages`). See docs/messages.md.
"""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import pandas as pd

from pipelines import lake, registry
from pipelines.config import REPO_ROOT, Paths, load_config
from pipelines.errors import SegoneError
from pipelines.runs import write_run_metrics

log = logging.getLogger(__name__)

FAMILY = "messages"
CITATION = ("BANKING77 (Casanueva et al. 2020, 'Efficient Intent Detection with Dual Sentence Encoders'), "
            "PolyAI-LDN/task-specific-datasets, CC BY 4.0")
INSIGHT_COLUMNS = ["message_id", "customer_id", "received_at", "channel", "intent", "intent_probability",
                   "sentiment", "distress", "signals", "model_version"]
SIGNAL_FLAGS = {"financial_difficulty": "has_financial_difficulty", "complaint": "has_recent_complaint",
                "fraud_or_lost_card": "has_fraud_or_lost_card", "wish_to_leave": "has_wish_to_leave",
                "personal_details_change": "has_personal_details_change"}
FEATURE_COLUMNS = ["customer_id", "n_messages", "last_message_at", "max_distress", "is_distressed",
                   *SIGNAL_FLAGS.values(), "last_complaint_at", "reasons", "model_version"]


def settings() -> dict[str, Any]:
    return load_config("messages")


# ---------------------------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------------------------

def training_file(cfg: dict[str, Any] | None = None) -> Path:
    """BANKING77's train.csv: $SEGONE_BANKING77 (the file or its folder), else config `training_file` looked up in
    the repository's parent folders (`../shared/...` beside a clone, `../../shared/...` beside a worktree)."""
    cfg = cfg or settings()
    override = os.environ.get("SEGONE_BANKING77")
    if override:
        path = Path(override)
        return path / "train.csv" if path.is_dir() else path
    relative = Path(cfg["training_file"])
    for parent in REPO_ROOT.resolve().parents:
        if (parent / relative).is_file():
            return parent / relative
    return REPO_ROOT.resolve().parent / relative


def read_labelled(path: Path) -> pd.DataFrame:
    """A labelled file with columns text,category (UTF-8 CSV); a clear error when it is not one."""
    if not path.is_file():
        raise SegoneError(f"labelled file {path} does not exist")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as err:
        raise SegoneError(f"{path} is not a CSV file with columns text,category: {err}") from err
    missing = {"text", "category"} - set(frame.columns)
    if missing:
        raise SegoneError(f"{path} has no column(s) {', '.join(sorted(missing))} (expected text,category)")
    frame = frame[["text", "category"]]
    empty = (frame["text"].str.strip() == "") | (frame["category"].str.strip() == "")
    if empty.all():
        raise SegoneError(f"{path} has no labelled rows")
    if empty.any():
        log.warning("%s: %d rows without text or category are left out", path, int(empty.sum()))
    return frame[~empty].reset_index(drop=True)


def candidate_specs(cfg: dict[str, Any]):
    from models.message_intent import IntentSpec

    return [IntentSpec.from_dict({**c, "max_chars": int(cfg.get("max_chars", 2000))}) for c in cfg["candidates"]]


def train_messages(paths: Paths, day: date | None = None, training: Path | None = None) -> dict[str, Any]:
    """Choose the intent model among the config's candidates by stratified k-fold cross-validation on the training
    file, fit the winner on all of it, save it (family `messages`) with the CV table and the data hash, and promote
    it. The same file and settings give the same version: it is then not trained again."""
    from models.message_intent import FORMAT_VERSION as MODEL_FORMAT

    started = time.perf_counter()
    cfg = settings()
    path = training or training_file(cfg)
    if not path.is_file():
        raise SegoneError(f"the intent model's training file {path} does not exist: set SEGONE_BANKING77 to the "
                          f"folder of BANKING77's train.csv")
    data_hash = hashlib.sha256(path.read_bytes()).hexdigest()
    frame = read_labelled(path)
    settings_hash = hashlib.sha256(json.dumps({**{k: cfg[k] for k in ("candidates", "cv_folds", "cv_seed",
                                                                      "max_chars")},
                                               "model_format": MODEL_FORMAT}, sort_keys=True).encode()).hexdigest()
    version = f"messages-{data_hash[:10]}-{settings_hash[:6]}"
    existing = registry.family_dir(paths, FAMILY) / version / registry.METADATA
    cached = model_cache() / version if model_cache() else None
    with _training_lock(cached if not existing.exists() else None):
        metadata, reason = _train_or_reuse(paths, cfg, frame, path, version, existing, cached, data_hash,
                                           settings_hash)
    registry.promote(paths, FAMILY, version, reason)
    metrics = {"family": FAMILY, "version": version, "promoted": True, "reason": reason,
               "chosen": metadata["chosen"], "cv_accuracy": metadata["cv_accuracy"],
               "cv_macro_f1": metadata["cv_macro_f1"], "seconds": round(time.perf_counter() - started, 1)}
    write_run_metrics(paths, day.isoformat() if day else "train", "train_messages", metrics)
    return metrics


@contextlib.contextmanager
def _training_lock(cached: Path | None) -> Iterator[None]:
    """Held while a version is looked up in the cache and, if missing, trained and stored there: processes that
    train the same version at once (two banks, two test workers) wait for the first instead of repeating its
    cross-validation, then take its model from the cache. No cache, or one that cannot be written: no lock."""
    if cached is None:
        yield
        return
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        handle = open(cached.parent / f".{cached.name}.lock", "a+")
    except OSError as error:
        log.warning("could not lock the messages model cache in %s: %s", cached.parent, error)
        yield
        return
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.info("another process is training intent model %s: waiting for it", cached.name)
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _train_or_reuse(paths: Paths, cfg: dict[str, Any], frame: pd.DataFrame, path: Path, version: str,
                    existing: Path, cached: Path | None, data_hash: str,
                    settings_hash: str) -> tuple[dict[str, Any], str]:
    """The version's metadata and why it is promoted: taken from the registry or the cache when the same training
    data and settings were seen before, else cross-validated, fitted, saved (and cached)."""
    from models.message_intent import select_and_fit

    if existing.exists():
        metadata = json.loads(existing.read_text(encoding="utf-8"))
        return metadata, "same training data and settings as an existing version: not trained again"
    if cached is not None and (cached / registry.METADATA).exists():
        metadata = json.loads((cached / registry.METADATA).read_text(encoding="utf-8"))
        registry.save_version(paths, FAMILY, version, lambda d: _copy_model(cached, d),
                              {k: v for k, v in metadata.items() if k not in ("family", "version")})
        return metadata, (f"same training data and settings as the cached version in {cached.parent}: "
                          f"not trained again")
    model, table = select_and_fit(candidate_specs(cfg), frame["text"].tolist(), frame["category"].tolist(),
                                  folds=int(cfg["cv_folds"]), seed=int(cfg["cv_seed"]),
                                  n_jobs=int(cfg.get("cv_jobs", 1)))
    chosen = next(r for r in table if r["chosen"])
    import sklearn

    metadata = {"training_file": str(path), "data_hash": data_hash, "settings_hash": settings_hash,
                "n_train": int(len(frame)), "n_intents": int(frame["category"].nunique()),
                "intents": sorted(frame["category"].unique().tolist()), "citation": CITATION,
                "selection": f"stratified {cfg['cv_folds']}-fold cross-validation on the training file "
                             f"(seed {cfg['cv_seed']}): best accuracy, then macro F1",
                "cv": table, "chosen": chosen["spec"]["name"], "cv_accuracy": chosen["accuracy"],
                "cv_macro_f1": chosen["macro_f1"], "temperature": chosen["temperature"],
                "blend_weights": chosen["weights"], "oof_calibration_error": chosen["oof_calibration_error"],
                "oof_log_loss": chosen["oof_log_loss"],
                "scikit_learn": sklearn.__version__, "config_version": cfg.get("version")}
    saved = registry.save_version(paths, FAMILY, version, model.save, metadata)
    reason = "first model of its family" if registry.promoted_version(paths, FAMILY) is None else \
        f"retrained: training data or settings changed ({metadata['chosen']})"
    if cached is not None:
        _store_in_cache(saved, cached)
    return metadata, reason


def model_cache() -> Path | None:
    """Where trained intent models are kept across banks: the model depends only on the training file and the
    settings (its version says both), so a second bank reuses it instead of repeating the cross-validation.
    $SEGONE_MODEL_CACHE (empty: no cache), else $XDG_CACHE_HOME/segone/models/messages (~/.cache/...)."""
    value = os.environ.get("SEGONE_MODEL_CACHE")
    if value is not None:
        return Path(value) / FAMILY if value.strip() else None
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "segone" / "models" / FAMILY


def _copy_model(source: Path, target: Path) -> None:
    for item in source.iterdir():
        if item.name != registry.METADATA and item.is_file():
            shutil.copy2(item, target / item.name)


def _store_in_cache(saved: Path, cached: Path) -> None:
    """Copy a trained version into the cache (beside it, then renamed: a reader never sees half a model)."""
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.parent / f".tmp-{os.getpid()}-{cached.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(saved, tmp)
        if cached.exists():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.rename(tmp, cached)
    except OSError as error:  # a read-only home or a full disk: the model is in the registry all the same
        log.warning("could not cache the messages model in %s: %s", cached.parent, error)


def load_model(paths: Paths, version: str | None = None):
    """The promoted (or named) intent model, with `.version`; a clear error when there is none or it is stale."""
    from models.message_intent import IncompatibleModelError, IntentClassifier

    if version is None:
        directory, metadata = registry.promoted(paths, FAMILY)
        version = metadata["version"]
    else:
        directory = registry.family_dir(paths, FAMILY) / version
    try:
        model = IntentClassifier.load(directory)
    except (IncompatibleModelError, FileNotFoundError, KeyError, ValueError, EOFError) as error:
        raise SegoneError(f"the {FAMILY} model {version} cannot be loaded ({error}): run `segone train`") from error
    model.version = version
    return model


def scorer(cfg: dict[str, Any] | None = None):
    from models.message_signals import MessageScorer

    return MessageScorer(cfg or settings())


# ---------------------------------------------------------------------------------------------------------------
# The pure part: messages -> insights -> per-customer features
# ---------------------------------------------------------------------------------------------------------------

def score_messages(model, message_scorer, messages: pd.DataFrame) -> pd.DataFrame:
    """Messages (message_id, customer_id, received_at, channel, text) -> insights (INSIGHT_COLUMNS): no text."""
    if not len(messages):
        return empty_insights()
    texts = messages["text"].astype(str).tolist()
    intents, probability = model.predict(texts)
    scores = message_scorer.score(texts, messages["channel"].tolist(), intents, probability)
    from models.message_signals import SIGNALS

    flags = np.column_stack([scores[s] for s in SIGNALS])
    names = np.array(SIGNALS, dtype=object)
    signals = [",".join(names[row]) for row in flags]
    return pd.DataFrame({
        "message_id": messages["message_id"].astype(str).to_numpy(),
        "customer_id": messages["customer_id"].astype(str).to_numpy(),
        "received_at": messages["received_at"].to_numpy(),
        "channel": messages["channel"].astype(str).to_numpy(),
        "intent": intents.astype(str),
        "intent_probability": np.round(probability.astype(np.float64), 6),
        "sentiment": np.round(scores["sentiment"], 4),
        "distress": np.round(scores["distress"], 4),
        "signals": signals,
        "model_version": str(model.version),
    })


def empty_insights() -> pd.DataFrame:
    return pd.DataFrame({"message_id": pd.Series(dtype=str), "customer_id": pd.Series(dtype=str),
                         "received_at": pd.Series(dtype="datetime64[us, UTC]"), "channel": pd.Series(dtype=str),
                         "intent": pd.Series(dtype=str), "intent_probability": pd.Series(dtype=float),
                         "sentiment": pd.Series(dtype=float), "distress": pd.Series(dtype=float),
                         "signals": pd.Series(dtype=str), "model_version": pd.Series(dtype=str)})


def empty_features() -> pd.DataFrame:
    columns = {"customer_id": str, "n_messages": "int64", "last_message_at": "datetime64[us, UTC]",
               "max_distress": float, "is_distressed": bool, **{c: bool for c in SIGNAL_FLAGS.values()},
               "last_complaint_at": "datetime64[us, UTC]", "reasons": str, "model_version": str}
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in columns.items()})


def customer_features(insights: pd.DataFrame, consented: Sequence[str], day: date, cfg: dict[str, Any],
                      reasons: dict[str, str]) -> pd.DataFrame:
    """Per consented customer with a message in the longest window: counts, distress and each signal within its
    own window (config `windows`: received_at in (D - days, D]), with the reasons in plain words."""
    windows = {k: int(v) for k, v in cfg["windows"].items()}
    threshold = float(cfg["distress"]["threshold"])
    end = pd.Timestamp(day + timedelta(days=1), tz="UTC")
    longest = max(windows.values())
    frame = insights[insights["customer_id"].isin(set(consented))]
    received = pd.to_datetime(frame["received_at"], utc=True)
    frame = frame[(received < end) & (received >= end - pd.Timedelta(days=longest))].copy()
    if not len(frame):
        return empty_features()
    frame["received_at"] = pd.to_datetime(frame["received_at"], utc=True)
    age_days = (end - frame["received_at"]).dt.total_seconds() / 86400.0
    signal_sets = frame["signals"].fillna("").str.split(",")
    out = frame.groupby("customer_id", sort=True).agg(n_messages=("message_id", "size"),
                                                      last_message_at=("received_at", "max"),
                                                      model_version=("model_version", "max"))
    in_distress_window = age_days <= windows["distress"]
    out["max_distress"] = frame["distress"].where(in_distress_window, 0.0).groupby(frame["customer_id"]).max()
    out["is_distressed"] = out["max_distress"] >= threshold
    for signal, column in SIGNAL_FLAGS.items():
        hit = signal_sets.map(lambda names, s=signal: s in names) & (age_days <= windows[signal])
        out[column] = hit.groupby(frame["customer_id"]).any()
        if signal == "complaint":
            out["last_complaint_at"] = frame["received_at"].where(hit).groupby(frame["customer_id"]).max()
    texts = []
    for row in out.itertuples():
        said = []
        if row.is_distressed:
            said.append("sounded distressed in a recent message")
        said += [reasons[s] for s, c in SIGNAL_FLAGS.items() if getattr(row, c)]
        texts.append("; ".join(said))
    out["reasons"] = texts
    out = out.reset_index()
    out["max_distress"] = out["max_distress"].fillna(0.0).round(4)
    return out[FEATURE_COLUMNS]


# ---------------------------------------------------------------------------------------------------------------
# The stage
# ---------------------------------------------------------------------------------------------------------------

def shards() -> list[int]:
    return list(range(lake.n_buckets()))


def consented_customers(paths: Paths, day: date, bucket: int) -> list[str]:
    """Customers of the bucket whose message_analysis consent holds on D (the latest snapshot on or before D)."""
    from pipelines.store import snapshot_path

    path = snapshot_path(paths, "consent_state", day)
    con = lake.connect(shared=True)
    try:
        has_column = any(r[0] == "is_message_analysis_allowed" for r in con.execute(
            f"describe select * from read_parquet('{path}/**/*.parquet')").fetchall())
        if not has_column:  # a snapshot written before the purpose existed: nobody has consented to it
            return []
        rows = con.execute(f"select customer_id from read_parquet('{path}/**/*.parquet') "
                           f"where bucket = {int(bucket)} and is_message_analysis_allowed order by customer_id"
                           ).fetchall()
    finally:
        con.close()
    return [r[0] for r in rows]


def _insight_partitions(paths: Paths, before: date, since: date) -> list[str]:
    root = paths.table("gold", "message_insights")
    if not root.exists():
        return []
    values = sorted(p.name.split("=", 1)[1] for p in root.glob("as_of=*") if any(p.rglob("*.parquet")))
    return [v for v in values if since.isoformat() <= v < before.isoformat()]


def messages_to_score(paths: Paths, day: date, bucket: int, consented: Sequence[str], since: date) -> pd.DataFrame:
    """Silver messages of D's load for the bucket's consented customers, received by the end of D; on the first
    night (no insights before D yet) also the history load's messages received since `since`."""
    scan = lake.scan_sql(paths, "silver", "messages")
    if scan is None or not consented:
        return pd.DataFrame(columns=["message_id", "customer_id", "received_at", "channel", "text"])
    loads = [f"'{day.isoformat()}'"]
    if not _insight_partitions(paths, day, date.min):
        loads.append("'history'")
    end = (day + timedelta(days=1)).isoformat()
    con = lake.connect(shared=True)
    try:
        con.register("consented_frame", pd.DataFrame({"customer_id": list(consented)}))
        return con.execute(
            f"select message_id, customer_id, received_at, channel, text from {scan} "
            f"where load_date in ({', '.join(loads)}) and bucket = {int(bucket)} "
            f"and received_at < timestamptz '{end} 00:00:00+00' "
            f"and (load_date <> 'history' or received_at >= timestamptz '{since.isoformat()} 00:00:00+00') "
            f"and customer_id in (select customer_id from consented_frame) "
            f"qualify row_number() over (partition by message_id order by load_date desc) = 1 "
            f"order by customer_id, received_at, message_id").df()
    finally:
        con.close()


def earlier_insights(paths: Paths, day: date, bucket: int, since: date) -> pd.DataFrame:
    partitions = _insight_partitions(paths, day, since)
    if not partitions:
        return empty_insights()
    files = [str(lake.partition_path(paths, "gold", "message_insights", as_of=p, bucket=str(bucket)))
             for p in partitions]
    files = [f for f in files if any(Path(f).glob("*.parquet"))]
    if not files:
        return empty_insights()
    con = lake.connect(shared=True)
    try:
        listing = ", ".join(f"'{f}/*.parquet'" for f in files)
        return con.execute(f"select {', '.join(INSIGHT_COLUMNS)} from read_parquet([{listing}], "
                           f"hive_partitioning = false)").df()
    finally:
        con.close()


def understand_messages_shard(paths: Paths, day: date, bucket: int, model=None, message_scorer=None
                              ) -> dict[str, Any]:
    """Score D's messages of one bucket's consented customers (gold message_insights, as_of=D/bucket=N) and roll
    the insights of the feature windows up per customer (gold message_signals, as_of=D/bucket=N)."""
    started = time.perf_counter()
    cfg = settings()
    since = day - timedelta(days=max(int(v) for v in cfg["windows"].values()))
    consented = consented_customers(paths, day, bucket)
    messages = messages_to_score(paths, day, bucket, consented, since)
    read_seconds = time.perf_counter() - started
    message_scorer = message_scorer or scorer(cfg)
    if len(messages):  # the model is needed (and must exist) only when there is something to read
        model = model or load_model(paths)
    version = str(model.version) if model is not None else registry.promoted_version(paths, FAMILY)
    insights = score_messages(model, message_scorer, messages) if len(messages) else empty_insights()
    del messages
    score_seconds = time.perf_counter() - started - read_seconds
    window = pd.concat([earlier_insights(paths, day, bucket, since), insights], ignore_index=True) \
        if len(insights) else earlier_insights(paths, day, bucket, since)
    window = window.drop_duplicates("message_id", keep="last")
    features = customer_features(window, consented, day, cfg,
                                 {s: message_scorer.reason(s) for s in SIGNAL_FLAGS})
    written = lake.write_frame(insights, lake.partition_path(paths, "gold", "message_insights",
                                                             as_of=day.isoformat(), bucket=str(bucket)), paths)
    n_features = lake.write_frame(features, lake.partition_path(paths, "gold", "message_signals",
                                                                as_of=day.isoformat(), bucket=str(bucket)), paths)
    metrics = {"bucket": int(bucket), "as_of": day.isoformat(), "model_version": version or "none",
               "n_consented": len(consented), "n_messages_scored": int(written),
               "n_customers_with_signals": int(n_features),
               "signals": {s: int(features[c].sum()) for s, c in SIGNAL_FLAGS.items()},
               "n_distressed": int(features["is_distressed"].sum()),
               "seconds": round(time.perf_counter() - started, 2), "read_seconds": round(read_seconds, 2),
               "score_seconds": round(score_seconds, 2)}
    write_run_metrics(paths, day.isoformat(), f"messages_bucket_{bucket}", metrics)
    return metrics


def understand_all(paths: Paths, day: date) -> dict[str, Any]:
    """Every shard in turn (the DAG maps understand_messages_shard over the shards instead)."""
    model = load_model(paths) if registry.promoted_version(paths, FAMILY) else None
    message_scorer = scorer()
    per_shard = [understand_messages_shard(paths, day, b, model, message_scorer) for b in shards()]
    return summarise_shards(paths, day, per_shard)


def summarise_shards(paths: Paths, day: date, per_shard: list[dict[str, Any]]) -> dict[str, Any]:
    signals: dict[str, int] = {}
    for m in per_shard:
        for name, n in m["signals"].items():
            signals[name] = signals.get(name, 0) + n
    metrics = {"as_of": day.isoformat(), "n_shards": len(per_shard),
               "n_consented": sum(m["n_consented"] for m in per_shard),
               "n_messages_scored": sum(m["n_messages_scored"] for m in per_shard),
               "n_customers_with_signals": sum(m["n_customers_with_signals"] for m in per_shard),
               "n_distressed": sum(m["n_distressed"] for m in per_shard), "signals": signals,
               "model_versions": sorted({m["model_version"] for m in per_shard})}
    write_run_metrics(paths, day.isoformat(), "messages", metrics)
    return metrics


def read_signals(paths: Paths, day: date, bucket: int) -> pd.DataFrame:
    """The persisted per-customer message features of D for one bucket (what decide reads); empty when the stage
    wrote none (no consented customer with a recent message) or did not run."""
    folder = lake.partition_path(paths, "gold", "message_signals", as_of=day.isoformat(), bucket=str(bucket))
    if not any(folder.glob("*.parquet")):
        return empty_features()
    con = lake.connect(shared=True)
    try:
        return con.execute(f"select {', '.join(FEATURE_COLUMNS)} from read_parquet('{folder}/*.parquet', "
                           f"hive_partitioning = false)").df()
    finally:
        con.close()


# ---------------------------------------------------------------------------------------------------------------
# Backtest on a labelled file
# ---------------------------------------------------------------------------------------------------------------

def backtest_messages(paths: Paths, labelled: Path, output: Path | None = None) -> dict[str, Any]:
    """The promoted intent model on a labelled file (text,category): accuracy, macro F1, n, per-intent figures.
    Without a promoted model it trains one first (from the training file; never from `labelled`)."""
    from models.message_intent import evaluate

    frame = read_labelled(Path(labelled))
    if registry.promoted_version(paths, FAMILY) is None:
        log.info("no promoted %s model: training one first (`segone train`'s messages step)", FAMILY)
        train_messages(paths)
    model = load_model(paths)
    _, metadata = registry.promoted(paths, FAMILY)
    started = time.perf_counter()
    result = evaluate(model, frame["text"].tolist(), frame["category"].tolist())
    seconds = time.perf_counter() - started
    training = Path(metadata.get("training_file", ""))
    overlap = None
    if training.is_file():
        train_texts = set(pd.read_csv(training, dtype=str, keep_default_na=False)["text"].str.strip().str.lower())
        overlap = int(frame["text"].str.strip().str.lower().isin(train_texts).sum())
    out = {"file": str(labelled), "model_version": model.version, "chosen": metadata.get("chosen"),
           "cv_accuracy": metadata.get("cv_accuracy"), "cv_macro_f1": metadata.get("cv_macro_f1"),
           "texts_also_in_training_file": overlap,
           "messages_per_second": round(len(frame) / seconds, 1) if seconds > 0 else None, **result}
    output = output or paths.reports / "backtest"
    output.mkdir(parents=True, exist_ok=True)
    (output / "messages_backtest.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


def heldout_messages(paths: Paths, output: Path | None = None, repeats: int | None = None,
                     test_size: float | None = None) -> dict[str, Any]:
    """`segone backtest messages --held-out`: the intent model's whole training procedure (the config's candidates,
    chosen by k-fold CV, blend weights and temperature fitted on out-of-fold scores) measured on repeated stratified
    held-out splits of the training file (`heldout` in config/messages.yaml): choices are made inside each split's
    training part only, the held-out part scores once. Mean and sd over splits of accuracy, macro F1, calibration;
    the plain TF-IDF + linear SVM baseline on the same splits; the reliability table. Written to
    reports/backtest/messages_heldout.json. It never reads the official test split."""
    from models.message_intent import heldout_evaluation

    cfg = settings()
    path = training_file(cfg)
    if not path.is_file():
        raise SegoneError(f"the intent model's training file {path} does not exist: set SEGONE_BANKING77 to the "
                          f"folder of BANKING77's train.csv")
    held = cfg.get("heldout", {})
    repeats = int(repeats if repeats is not None else held.get("repeats", 5))
    test_size = float(test_size if test_size is not None else held.get("test_size", 0.25))
    if repeats < 1 or not 0 < test_size < 1:
        raise SegoneError("--repeats must be at least 1 and --test-size between 0 and 1 (exclusive)")
    frame = read_labelled(path)
    started = time.perf_counter()
    result = heldout_evaluation(candidate_specs(cfg), frame["text"].tolist(), frame["category"].tolist(),
                                repeats=repeats, test_size=test_size, seed=int(held.get("seed", 0)),
                                folds=int(cfg["cv_folds"]), cv_seed=int(cfg["cv_seed"]),
                                n_jobs=int(cfg.get("cv_jobs", 1)), progress=log.info)
    import sklearn

    out = {"training_file": str(path), "data_hash": hashlib.sha256(path.read_bytes()).hexdigest(),
           "citation": CITATION, "config_version": cfg.get("version"), "scikit_learn": sklearn.__version__,
           **result, "seconds": round(time.perf_counter() - started, 1),
           "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
    output = output or paths.reports / "backtest"
    output.mkdir(parents=True, exist_ok=True)
    (output / "messages_heldout.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out


# ---------------------------------------------------------------------------------------------------------------
# Lead time on a simulated bank: what messages tell before a shortfall or a move
# ---------------------------------------------------------------------------------------------------------------

def lead_times(paths: Paths, output: Path | None = None, window_days: int = 30) -> dict[str, Any]:
    """On a simulated bank (truth/ present): score every loaded message of the customers whose message_analysis
    consent holds at the latest snapshot, and measure how early the signals come. For each true first fall below
    zero (truth/shortfalls): the share of those customers with a financial_difficulty message in the `window_days`
    before it and the median lead in days; the same share among customers who never went below zero (the false
    alarms). For moves and home purchases (truth/life_events): the share with a personal_details_change message in
    the window before the event, and the median lead."""
    from models.message_signals import SIGNALS

    if not (paths.truth / "shortfalls").exists():
        raise SegoneError(f"no simulator truth under {paths.truth}: the lead-time backtest needs a simulated bank "
                          f"(use --labelled FILE to score labelled messages)")
    scan = lake.scan_sql(paths, "silver", "messages")
    if scan is None:
        raise SegoneError("no silver messages: load the history first (`segone load-history`)")
    from pipelines.store import snapshot_path

    con = lake.connect()
    try:
        snapshot = snapshot_path(paths, "consent_state", date.max)
        consented = [r[0] for r in con.execute(f"select customer_id from read_parquet('{snapshot}/**/*.parquet') "
                                               f"where is_message_analysis_allowed").fetchall()]
        messages = con.execute(f"select message_id, customer_id, received_at, channel, text from {scan} "
                               f"qualify row_number() over (partition by message_id order by load_date desc) = 1"
                               ).df()
        shortfalls = con.execute(f"select customer_id, min(first_below_zero) as day from "
                                 f"read_parquet('{paths.truth}/shortfalls/*.parquet') group by 1").df()
        events = con.execute(f"select customer_id, event_type, event_date as day from "
                             f"read_parquet('{paths.truth}/life_events/*.parquet') "
                             f"where event_type in ('moving_home', 'buying_home')").df()
    finally:
        con.close()
    messages = messages[messages["customer_id"].isin(set(consented))].reset_index(drop=True)
    model = load_model(paths)
    insights = score_messages(model, scorer(), messages)
    insights["day"] = pd.to_datetime(insights["received_at"], utc=True).dt.tz_convert(None).dt.normalize()
    first_day = insights["day"].min() if len(insights) else None
    last_day = insights["day"].max() if len(insights) else None

    def lead(targets: pd.DataFrame, signal: str) -> dict[str, Any]:
        targets = targets.dropna(subset=["day"]).copy()
        targets["day"] = pd.to_datetime(targets["day"])
        # events far enough inside the window of loaded messages to have been warned of
        targets = targets[(targets["day"] >= first_day + pd.Timedelta(days=window_days)) & (targets["day"] <= last_day)]
        targets = targets[targets["customer_id"].isin(set(consented))]
        hits = insights[insights["signals"].str.contains(signal, regex=False)][["customer_id", "day"]]
        joined = targets.merge(hits, on="customer_id", how="left", suffixes=("", "_msg"))
        gap = (joined["day"] - joined["day_msg"]).dt.days
        joined = joined[(gap >= 0) & (gap <= window_days)].assign(lead=gap)
        best = joined.groupby(["customer_id", "day"])["lead"].max()
        return {"n_events": int(len(targets)), "n_with_signal_before": int(len(best)),
                "share_with_signal_before": round(len(best) / len(targets), 4) if len(targets) else None,
                "median_lead_days": float(best.median()) if len(best) else None}

    short = shortfalls.rename(columns={"day": "day"})
    never = sorted(set(consented) - set(short.dropna(subset=["day"])["customer_id"]))
    difficulty_customers = set(insights.loc[insights["signals"].str.contains("financial_difficulty"), "customer_id"])
    out = {"window_days": window_days, "model_version": model.version, "n_consented": len(consented),
           "n_messages_scored": int(len(insights)),
           "signal_counts": {s: int(insights["signals"].str.contains(s, regex=False).sum()) for s in SIGNALS},
           "shortfall": lead(short, "financial_difficulty"),
           "shortfall_false_alarm_share": round(len(difficulty_customers & set(never)) / len(never), 4)
           if never else None,
           "moving_or_buying_home": lead(events[["customer_id", "day"]], "personal_details_change")}
    output = output or paths.reports / "backtest"
    output.mkdir(parents=True, exist_ok=True)
    (output / "messages_lead_time.json").write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return out
