"""The intent model's predict cost (docs/messages.md "Predict cost"): fit the previous SVM + logistic regression blend
and the SVM + networks blend (the last candidate of config/messages.yaml) on all of train.csv with fixed blend
weights, then time `predict` on 100,000 bench-like messages (best of two, a cold n-gram cache each time).
Run: PYTHONPATH=. python benchmarks/messages_predict_cost.py"""
import sys, time, json, numpy as np, pandas as pd
sys.path.insert(0, str(__import__('pathlib').Path(__file__).resolve().parents[1]))
from models.message_intent import IntentClassifier, IntentSpec
from pipelines import messages
df = pd.read_csv(messages.training_file(), dtype=str, keep_default_na=False)
texts = np.array(df.text.tolist(), dtype=object)
rng = np.random.default_rng(0)
n = 100_000
body = texts[rng.integers(0, len(texts), size=n)].copy()
long = np.flatnonzero(rng.random(n) < 0.2)
extra = rng.integers(1, 4, size=len(long))
for k, i in enumerate(long):
    body[i] = " ".join([body[i], *texts[rng.integers(0, len(texts), size=extra[k])]])
body = body.tolist()
cfg = messages.settings()
spec = messages.candidate_specs(cfg)[-1]
model = IntentClassifier(spec, 0.3, (0.26, 0.74))
c, w = time.process_time(), time.time()
model.fit(df.text.tolist(), df.category.tolist())
print(spec.name, 'final fit: cpu %.1f wall %.1f' % (time.process_time() - c, time.time() - w), flush=True)
old = IntentClassifier(IntentSpec('old', char_ngrams=(1, 5), classifier='svm+logreg', C=(1.0, 10.0)), 0.361, (0.667, 0.333))
c, w = time.process_time(), time.time()
old.fit(df.text.tolist(), df.category.tolist())
print('old final fit: cpu %.1f wall %.1f' % (time.process_time() - c, time.time() - w), flush=True)
for name, m in [('before svm+logreg', old), ('after ' + model.spec.name, model)]:
    best = None
    for rep in range(2):
        m._fast = None
        c, w = time.process_time(), time.time()
        m.predict(body)
        r = (time.process_time() - c, time.time() - w)
        best = r if best is None or r[0] < best[0] else best
    print(name, 'predict 100k: cpu %.2f s wall %.2f s (best of 2)' % best, flush=True)
