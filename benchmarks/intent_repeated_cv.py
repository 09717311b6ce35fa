"""Repeated stratified 5-fold cross-validation of intent-model variants on BANKING77's train.csv (docs/messages.md,
"Sixth round"; the official test split is never read). Each fold fits every variant of a plan on the fold's training
part and saves its test-fold scores and CPU seconds (`time.process_time` in the worker: features + fit + scoring)
to DIR/<fold>.pkl, so an interrupted run resumes and a partial one can be summarised.

Run (niced, two folds at a time):
  PYTHONPATH=. SEGONE_REFERENCE=../shared/reference nice -n 19 python benchmarks/intent_repeated_cv.py run \
      '{"repo": ["svm", "mlp", "mlp_swa"]}' DIR REPEATS
  python benchmarks/intent_repeated_cv.py summary DIR [DIR ...]
Plans: a feature view (plain: `TfidfVectorizer()`; brief: words 1-2 + char_wb 2-5, sublinear tf, no normalisation;
repo: the model's normalisation and views, words 1-2 + char_wb 1-5 min_df 2; repo_us: repo with British spellings
made American) -> classifiers (plainsvm: `LinearSVC()`; svm: LinearSVC C 1; svm_bal: class-balanced; svm_innerC: C
in {0.3, 1, 3} chosen by 3-fold CV inside the training part; logreg: C 10; sgd: modified Huber, alpha 5e-5; mlp:
the model's three networks; mlp_swa: the same networks with each one's weights averaged over the ends of passes
7-12). Blends (svm+mlp, ...) are summarised with weights fitted by `fit_blend` on each repeat's available folds.
"""
import glob, json, os, pickle, re, sys, time
import numpy as np, pandas as pd, scipy.sparse as sp
from joblib import Parallel, delayed
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.model_selection import RepeatedStratifiedKFold, StratifiedKFold
from sklearn.svm import LinearSVC
from sklearn.linear_model import LogisticRegression, SGDClassifier
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from models import message_intent as mi  # noqa: E402

US = [(r"\bcancell(ed|ing|ation)", r"cancel\1"), (r"\bcheques?\b", "check"), (r"(\w)ise\b", r"\1ize"),
      (r"(\w)ised\b", r"\1ized"), (r"(\w)ising\b", r"\1izing"), (r"\btravell", "travel"), (r"\bcentre\b", "center"),
      (r"\bcolour", "color"), (r"\bfavour", "favor"), (r"\blicence\b", "license")]
US_RES = [(re.compile(p), r) for p, r in US]

def norm_us(texts):
    out = mi.normalise_many(texts, 2000)
    res = []
    for t in out:
        for p, r in US_RES:
            t = p.sub(r, t)
        res.append(t)
    return res

def views(kind):
    if kind == "plain":
        return [TfidfVectorizer()], None
    if kind == "brief":  # word 1-2 + char_wb 2-5, sublinear, sklearn lowercase only
        return [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32),
                TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2, dtype=np.float32)], None
    pre = norm_us if kind == "repo_us" else (lambda t: mi.normalise_many(t, 2000))
    return [TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=False, token_pattern=r"(?u)\b\w+\b", dtype=np.float32),
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 5), sublinear_tf=True, lowercase=False, min_df=2, dtype=np.float32)], pre

def featurise(kind, tr, te):
    vs, pre = views(kind)
    a, b = (pre(tr), pre(te)) if pre else (tr, te)
    Xtr = sp.hstack([v.fit_transform(a) for v in vs], format="csr")
    Xte = sp.hstack([v.transform(b) for v in vs], format="csr")
    return Xtr, Xte

def inner_C(X, y, Cs=(0.3, 1.0, 3.0)):
    acc = {}
    for C in Cs:
        s = 0
        for a, b in StratifiedKFold(3, shuffle=True, random_state=1).split(X, y):
            s += (LinearSVC(C=C, random_state=0).fit(X[a], y[a]).predict(X[b]) == y[b]).sum()
        acc[C] = s
    return max(Cs, key=lambda c: (acc[c], -abs(np.log(c))))

def clf_scores(name, X, y, Xte, nclass):
    t = time.process_time()
    extra = {}
    if name == "svm":
        m = LinearSVC(C=1.0, random_state=0).fit(X, y); s = m.decision_function(Xte)
    elif name == "svm_bal":
        m = LinearSVC(C=1.0, class_weight="balanced", random_state=0).fit(X, y); s = m.decision_function(Xte)
    elif name == "svm_innerC":
        C = inner_C(X, y); extra["C"] = C
        m = LinearSVC(C=C, random_state=0).fit(X, y); s = m.decision_function(Xte)
    elif name == "logreg":
        m = LogisticRegression(C=10.0, max_iter=1000, tol=1e-3).fit(X, y); s = m.decision_function(Xte)
    elif name == "sgd":
        m = SGDClassifier(loss="modified_huber", alpha=5e-5, max_iter=50, tol=None, random_state=0).fit(X, y); s = m.decision_function(Xte)
    elif name == "plainsvm":
        m = LinearSVC().fit(X, y); s = m.decision_function(Xte)
    elif name == "mlp_swa":
        W1, b1, W2, b2 = train_swa(X, y, nclass)
        s = mi.network_scores(Xte, W1, b1, W2) + b2
    elif name.startswith("mlp"):
        nets = 3
        W1, b1, W2, b2 = mi.train_networks(X, y, nclass, 256, 12, nets)
        s = mi.network_scores(Xte, W1, b1, W2) + b2
    return s, time.process_time() - t, extra

def train_swa(X, y, n_classes, hidden=256, epochs=12, networks=3, swa_from=6):
    """The repo's network training, but each network's weights averaged over the ends of epochs swa_from+1..epochs."""
    from threadpoolctl import threadpool_limits
    parts = []
    with threadpool_limits(limits=1, user_api="blas"):
        for seed in range(networks):
            acc = None; k = 0
            def snap(epoch, params):
                nonlocal acc, k
                if epoch < swa_from:
                    return
                k += 1
                acc = [p.copy() for p in params] if acc is None else [a + (p - a) / k for a, p in zip(acc, params)]
            mi._train_network(X, y, n_classes, hidden, epochs, seed, on_epoch=snap)
            parts.append(acc)
    return (np.hstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.vstack([p[2] for p in parts]) / networks, np.mean([p[3] for p in parts], axis=0))

def run_fold(i, tr, te, texts, y, plan, nclass):
    out = {}
    for kind, clfs in plan.items():
        t = time.process_time()
        Xtr, Xte = featurise(kind, list(texts[tr]), list(texts[te]))
        ft = time.process_time() - t
        for c in clfs:
            s, ct, extra = clf_scores(c, Xtr, y[tr], Xte, nclass)
            out[f"{kind}/{c}"] = (s.astype(np.float32), ft + ct, extra)
    return i, out


def load():
    df = pd.read_csv(os.path.join(os.environ.get("SEGONE_REFERENCE", "../shared/reference"), "banking77", "train.csv"))
    classes = np.array(sorted(df["category"].unique()), dtype=object)
    return df["text"].to_numpy(object), classes, np.searchsorted(classes, df["category"].to_numpy(object))


def run(plan, directory, repeats):
    texts, classes, y = load()
    splits = list(RepeatedStratifiedKFold(n_splits=5, n_repeats=repeats, random_state=0).split(texts, y))
    os.makedirs(directory, exist_ok=True)

    def job(i, tr, te):
        path = os.path.join(directory, f"{i}.pkl")
        if os.path.exists(path):
            return
        _, out = run_fold(i, tr, te, texts, y, plan, len(classes))
        with open(path + ".tmp", "wb") as f:
            pickle.dump({"test": te, "out": out}, f)
        os.replace(path + ".tmp", path)

    Parallel(n_jobs=2)(delayed(job)(i, tr, te) for i, (tr, te) in enumerate(splits))

def read_folds(dirs):
    folds = {}
    for d in dirs:
        for p in glob.glob(os.path.join(d, "*.pkl")):
            data = pickle.load(open(p, "rb")); i = int(os.path.basename(p)[:-4])
            folds.setdefault(i, {"test": data["test"], "out": {}})["out"].update(data["out"])
    return folds


def summary(dirs):
    classes, y = load()[1:]
    folds = read_folds(dirs)
    keys = sorted({k for f in folds.values() for k in f["out"]})
    rows = []
    for k in keys:
        got = [i for i in sorted(folds) if k in folds[i]["out"]]
        accs = [(folds[i]["out"][k][0].argmax(1) == y[folds[i]["test"]]).mean() for i in got]
        cpu = np.mean([folds[i]["out"][k][1] for i in got])
        ex = [folds[i]["out"][k][2].get("C") for i in got if folds[i]["out"][k][2]]
        print(f"{k:22s} n={len(got):2d} acc {np.mean(accs):.4f} sd {np.std(accs, ddof=1) if len(accs)>1 else 0:.4f} min {min(accs):.4f} max {max(accs):.4f} cpu/fold {cpu:.1f}s" + (f" C {ex}" if ex else ""))
    # blends: weights and temperature fitted (fit_blend) on the pooled available folds' scores of each repeat, as
    # cross_validate fits them on the out-of-fold scores it then scores
    for a, b in [("repo/svm", "repo/mlp"), ("repo/svm", "repo/mlp_swa"), ("repo/mlp", "repo/mlp_swa")]:
        got = [i for i in sorted(folds) if a in folds[i]["out"] and b in folds[i]["out"]]
        if not got:
            continue
        accs, ws = [], []
        for rep in sorted({i // 5 for i in got}):
            fs = [i for i in got if i // 5 == rep]
            te = np.concatenate([folds[i]["test"] for i in fs])
            S = np.stack([np.vstack([folds[i]["out"][k][0] for i in fs]) for k in (a, b)]).astype(np.float64)
            w, T = mi.fit_blend(S, classes[y[te]], classes)
            ws.append(round(w[0], 3))
            off = 0
            for i in fs:
                n = len(folds[i]["test"])
                accs.append(((w[0] * S[0, off:off + n] + w[1] * S[1, off:off + n]).argmax(1) == y[folds[i]["test"]]).mean())
                off += n
        print(f"{a}+{b.split('/')[1]:10s} n={len(accs):2d} acc {np.mean(accs):.4f} sd {np.std(accs, ddof=1) if len(accs)>1 else 0:.4f} min {min(accs):.4f} max {max(accs):.4f} w_first {ws}")


if __name__ == "__main__":
    if len(sys.argv) >= 4 and sys.argv[1] == "run":
        run(json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 5)
    elif len(sys.argv) >= 3 and sys.argv[1] == "summary":
        summary(sys.argv[2:])
    else:
        sys.exit("usage: intent_repeated_cv.py run PLAN_JSON DIR [REPEATS] | summary DIR [DIR ...]")
