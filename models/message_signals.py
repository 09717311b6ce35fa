"""Sentiment, distress and bank signals of customer messages: pure functions of the text, the channel and the intent.

Sentiment is VADER's compound score (Hutto and Gilbert 2014; the `vadersentiment` package ships its lexicon), in
[-1, 1]. Distress in [0, 1] combines negativity with groups of distress phrases (config `distress`). The bank signals
(financial difficulty, complaint, fraud or lost card, wish to leave, change of personal details) each come from a
list of intents, phrases and channels (config `signals`). Phrases (lower case) are matched on a whole batch at once
(one regular expression pass per group over the joined, lower-cased texts), so a million messages cost seconds.
"""
from __future__ import annotations

import re
import string
from typing import Any, Sequence

import numpy as np

SIGNALS = ("financial_difficulty", "complaint", "fraud_or_lost_card", "wish_to_leave", "personal_details_change")


def _compile(patterns: Sequence[str]) -> re.Pattern | None:
    """One alternation of a group's phrases, matched at a word start on lower-cased text."""
    if not patterns:
        return None
    return re.compile("\\b(?:" + "|".join(f"(?:{p})" for p in patterns) + ")")


def _joined(texts: Sequence[str]) -> tuple[str, np.ndarray]:
    """The texts lower-cased and joined by newlines (their own newlines made spaces), and where each starts."""
    clean = [t.replace("\n", " ").replace("\r", " ") for t in texts]
    lengths = np.fromiter((len(t) + 1 for t in clean), dtype=np.int64, count=len(clean))
    starts = np.concatenate(([0], np.cumsum(lengths)[:-1])) if len(clean) else np.zeros(0, dtype=np.int64)
    joined = "\n".join(clean).lower()
    if len(joined) != int(lengths.sum()) - (1 if len(clean) else 0):  # lower() changed a length (rare letters)
        joined = "\n".join(t.lower() if len(t.lower()) == len(t) else t for t in clean)
    return joined, starts


def _matches(pattern: re.Pattern | None, joined: str, starts: np.ndarray) -> np.ndarray:
    """Per text: does the pattern match inside it?"""
    hit = np.zeros(len(starts), dtype=bool)
    if pattern is None or not len(starts):
        return hit
    positions = np.fromiter((m.start() for m in pattern.finditer(joined)), dtype=np.int64)
    if len(positions):
        hit[np.searchsorted(starts, positions, side="right") - 1] = True
    return hit


class MessageScorer:
    """Scores batches of messages with the settings of config/messages.yaml (`distress`, `signals`,
    `min_intent_probability`, `max_chars`)."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

        self.cfg = cfg
        self.max_chars = int(cfg.get("max_chars", 2000))
        self.vader = SentimentIntensityAnalyzer()
        distress = cfg["distress"]
        self.negativity_weight = float(distress["negativity_weight"])
        self.threshold = float(distress["threshold"])
        self.groups = {name: (float(g["weight"]), _compile(g["patterns"])) for name, g in distress["groups"].items()}
        self.min_probability = float(cfg.get("min_intent_probability", 0.5))
        self.signals = {}
        for name in SIGNALS:
            spec = cfg["signals"][name]
            self.signals[name] = {"intents": set(spec.get("intents") or []),
                                  "channels": set(spec.get("channels") or []),
                                  "pattern": _compile(spec.get("patterns") or []),
                                  "reason": spec["reason"]}

    def sentiment(self, texts: Sequence[str]) -> np.ndarray:
        """VADER's compound score of each text. A text (ASCII: no emoji to translate) none of whose words is in
        VADER's lexicon scores exactly 0 in VADER, whose rules only scale lexicon words; such texts (about half of
        real banking queries) skip the analyser. Equal to VADER on every text (tested)."""
        scores, lexicon, punctuation = self.vader.polarity_scores, self.vader.lexicon, string.punctuation

        def compound(text: str) -> float:
            if text.isascii():
                for word in text.split():
                    lower = word.lower()
                    if lower in lexicon or lower.strip(punctuation) in lexicon:
                        break
                else:
                    return 0.0
            return scores(text)["compound"]

        return np.fromiter((compound(t[: self.max_chars]) for t in texts), dtype=np.float64, count=len(texts))

    def score(self, texts: Sequence[str], channels: Sequence[str], intents: Sequence[str],
              probabilities: Sequence[float]) -> dict[str, np.ndarray]:
        """sentiment, distress and one boolean array per signal, for parallel sequences of messages."""
        texts = [t[: self.max_chars] if isinstance(t, str) else "" for t in texts]
        joined, starts = _joined(texts)
        sentiment = self.sentiment(texts)
        keep = 1.0 - self.negativity_weight * np.clip(-sentiment, 0.0, 1.0)
        for weight, pattern in self.groups.values():
            keep *= np.where(_matches(pattern, joined, starts), 1.0 - weight, 1.0)
        out: dict[str, np.ndarray] = {"sentiment": sentiment, "distress": np.clip(1.0 - keep, 0.0, 1.0)}
        channels = np.asarray(list(channels), dtype=object)
        intents = np.asarray(list(intents), dtype=object)
        confident = np.asarray(probabilities, dtype=np.float64) >= self.min_probability
        for name, spec in self.signals.items():
            hit = _matches(spec["pattern"], joined, starts)
            if spec["intents"]:
                hit |= confident & np.isin(intents, list(spec["intents"]))
            if spec["channels"]:
                hit |= np.isin(channels, list(spec["channels"]))
            out[name] = hit
        return out

    def reason(self, signal: str) -> str:
        return self.signals[signal]["reason"]
