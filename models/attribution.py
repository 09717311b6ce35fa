"""Per-row feature attributions of a LightGBM model, fast enough for a million customers.

Path attribution (Saabas; the `treeinterpreter` method): in every tree, the step from a node to the child a row
goes to changes the tree's output by value(child) - value(node), and that change is credited to the node's split
feature. Summed over the path and over all trees, the credits add up exactly to the raw score minus the model's
average output, like SHAP values, but each tree costs one leaf lookup per row instead of TreeSHAP's polynomial
walk: LightGBM's own pred_contrib ran at about 1,000 rows/s here, this runs at hundreds of thousands. It is less
fair than SHAP to features that split near the root; for naming the top few reasons of a forecast, that is enough.
"""
from __future__ import annotations

import lightgbm as lgb
import numpy as np


def _leaf_tables(booster: lgb.Booster) -> list[np.ndarray]:
    """Per tree: a (n_leaves x n_features) table of the credit each feature gets on the path to each leaf."""
    n_features = booster.num_feature()
    tables = []
    for tree in booster.dump_model()["tree_info"]:
        root = tree["tree_structure"]
        n_leaves = int(tree["num_leaves"])
        table = np.zeros((max(n_leaves, 1), n_features))
        if "leaf_index" in root or "split_feature" not in root:  # a single-leaf tree credits nothing
            tables.append(table)
            continue
        stack = [(root, np.zeros(n_features))]
        while stack:
            node, credit = stack.pop()
            parent_value = node["internal_value"]
            for side in ("left_child", "right_child"):
                child = node[side]
                child_value = child["leaf_value"] if "leaf_index" in child else child["internal_value"]
                step = credit.copy()
                step[node["split_feature"]] += child_value - parent_value
                if "leaf_index" in child:
                    table[child["leaf_index"]] = step
                else:
                    stack.append((child, step))
        tables.append(table)
    return tables


class PathAttributor:
    """Path attributions of one booster; the leaf tables are built once and reused for every batch."""

    def __init__(self, booster: lgb.Booster) -> None:
        self.booster = booster
        self.tables = _leaf_tables(booster)

    def attributions(self, X: np.ndarray, num_threads: int = 2) -> np.ndarray:
        """rows x features: how much each feature moved each row's raw score."""
        leaves = self.booster.predict(X, pred_leaf=True, num_threads=num_threads)
        leaves = np.asarray(leaves, dtype=np.int64).reshape(len(X), -1)
        out = np.zeros((len(X), self.booster.num_feature()))
        for t, table in enumerate(self.tables):
            out += table[leaves[:, t]]
        return out

    def top_features(self, X: np.ndarray, names: list[str], k: int = 3, num_threads: int = 2) -> list[list[str]]:
        """Per row, the names of the (at most) k features that raised the score most (positive credit only)."""
        credit = self.attributions(X, num_threads)
        order = np.argsort(-credit, axis=1, kind="stable")[:, :k]
        top_credit = np.take_along_axis(credit, order, axis=1)
        return [[names[j] for j, c in zip(row, cs) if c > 0] for row, cs in zip(order, top_credit)]
