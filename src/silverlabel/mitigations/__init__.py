"""Mitigations compared at an equal gold budget.

A policy chooses which training items get their gold label; every policy spends exactly the same budget B, so
they can be compared by what the students trained on the result achieve. :func:`apply_policy` runs a policy with
gold behind a counting :class:`GoldOracle` and accounts for it; :func:`policy_input` then :func:`select`
run it without applying anything (the ``select`` command, where gold is a person's time).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import SilverlabelError
from .base import (
    POLICIES,
    GoldOracle,
    MitigationResult,
    PolicyInput,
    PolicySpec,
    Selection,
    register_policy,
    resolve_budget,
)

log = logging.getLogger(__name__)

ACTIONS = ("replace", "drop")


def policy_spec(name: str) -> PolicySpec:
    if name not in POLICIES:
        raise SilverlabelError(f"unknown policy '{name}'; choose one of {', '.join(sorted(POLICIES))}")
    return POLICIES[name]


def teacher_arrays(records: pd.DataFrame, label_names: Sequence[str], *, where: str = "records"):
    """P_S (uniform rows where the call failed), teacher label index (-1 if failed) and the failed mask."""
    cols = [f"p:{n}" for n in label_names]
    missing = [c for c in ("item", "label", *cols) if c not in records.columns]
    if missing:
        raise SilverlabelError(f"{where}: no column '{missing[0]}'; pass a `silverlabel annotate` output "
                               f"(columns item, text, label, entropy, p:<label> for {list(label_names)})")
    index = {n: i for i, n in enumerate(label_names)}
    raw = records["label"].to_numpy(dtype=object)
    failed = np.array([v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in raw], dtype=bool)
    unknown = [v for v, f in zip(raw, failed) if not f and v not in index]
    if unknown:
        raise SilverlabelError(f"{where}: teacher label '{unknown[0]}' is not one of {list(label_names)}")
    teacher = np.array([-1 if f else index[v] for v, f in zip(raw, failed)], dtype=np.int64)
    probs = np.array(records[cols].to_numpy(dtype=np.float64), copy=True)  # pandas may hand out a read-only view
    bad = np.isnan(probs).any(axis=1)
    failed |= bad
    teacher[bad] = -1
    probs[failed] = 1.0 / len(label_names)
    return probs, teacher, failed


def policy_input(name: str, records: pd.DataFrame, *, label_names: Sequence[str], budget: float | str,
                 oracle: GoldOracle | None = None, seed: int = 0, ensemble: Sequence[pd.DataFrame] | None = None,
                 options: dict[str, Any] | None = None) -> PolicyInput:
    """What policy ``name`` would see, with its options checked (unknown keys are an error)."""
    spec = policy_spec(name)
    unknown = sorted(set(options or {}) - set(spec.defaults))
    if unknown:
        allowed = ", ".join(sorted(spec.defaults)) or "none"
        raise SilverlabelError(f"policy '{name}' has no option '{unknown[0]}'; its options are: {allowed}")
    records = records.reset_index(drop=True)
    probs, teacher, failed = teacher_arrays(records, label_names)
    return PolicyInput(records=records, label_names=list(label_names), budget=resolve_budget(budget, len(records)),
                       oracle=oracle, seed=seed, ensemble=list(ensemble or []),
                       options={**spec.defaults, **(options or {})}, probs=probs, teacher=teacher, failed=failed)


def select(name: str, ctx: PolicyInput) -> Selection:
    """Policy ``name``'s selection on ``ctx`` (from :func:`policy_input`), checked against its budget."""
    selection = POLICIES[name].fn(ctx)
    chosen = np.asarray(selection.chosen, dtype=bool)
    if chosen.shape != (ctx.n,) or chosen.sum() > ctx.budget:
        raise RuntimeError(f"policy '{name}' chose {int(chosen.sum())} items for a budget of {ctx.budget} (a bug)")
    selection.chosen = chosen
    return selection


def apply_policy(name: str, records: pd.DataFrame, *, label_names: Sequence[str], budget: float | str,
                 oracle: GoldOracle, action: str = "replace", seed: int = 0,
                 ensemble: Sequence[pd.DataFrame] | None = None,
                 options: dict[str, Any] | None = None) -> MitigationResult:
    """Training labels after policy ``name`` spent ``budget`` gold labels on ``records`` (a teacher's annotation
    frame). ``oracle`` holds the gold of every row (in order); a fresh counter is used for each call.

    ``action='replace'`` puts gold on the chosen items (the paper's); ``'drop'`` removes them instead.
    """
    if action not in ACTIONS:
        raise SilverlabelError(f"action '{action}' is not one of {', '.join(ACTIONS)}")
    if len(oracle) != len(records):
        raise SilverlabelError(f"the oracle holds {len(oracle)} gold labels for {len(records)} records")
    b = resolve_budget(budget, len(records))
    session = oracle.session(budget=b)
    # the teacher's arrays are read from the records once, here, and shared with the policy
    ctx = policy_input(name, records, label_names=label_names, budget=b, oracle=session, seed=seed,
                       ensemble=ensemble, options=options)
    selection = select(name, ctx)
    chosen = selection.chosen
    gold_chosen = session.reveal(np.flatnonzero(chosen))
    if session.used != b and not (selection.info.get("budget_is_cap") and session.used < b):
        raise RuntimeError(f"policy '{name}' spent {session.used} gold labels, not the budget {b} (a bug)")
    teacher, failed = ctx.teacher, ctx.failed
    teacher_labels = np.array([None if f else label_names[t] for t, f in zip(teacher, failed)], dtype=object)
    labels = (teacher_labels if selection.labels is None else np.asarray(selection.labels, dtype=object)).copy()
    soft = None if selection.soft is None else np.array(selection.soft, dtype=np.float64)
    if action == "replace":
        labels[chosen] = gold_chosen
        if soft is not None:
            soft[chosen] = 0.0
            index = {n_: i for i, n_ in enumerate(label_names)}
            soft[np.flatnonzero(chosen), [index[g] for g in gold_chosen]] = 1.0
    else:
        labels[chosen] = None
    if soft is not None:
        soft[np.array([v is None for v in labels], dtype=bool)] = np.nan
    accounting = _accounting(records, ensemble or [], teacher_labels, labels, chosen, session, b, selection)
    log.info("policy %s (%s): %d gold labels, noise rate %.3f", name, action, accounting["gold_used"],
             accounting["noise_rate"] if accounting["noise_rate"] is not None else float("nan"))
    return MitigationResult(labels=labels, soft=soft, chosen=chosen, accounting=accounting, policy=name,
                            action=action)


def _accounting(records, ensemble, teacher_labels, labels, chosen, session, b, selection) -> dict[str, Any]:
    gold = session.audit()
    wrong = np.array([t is None or t != g for t, g in zip(teacher_labels, gold)], dtype=bool)
    kept = np.array([v is not None for v in labels], dtype=bool)
    caught = int((wrong & chosen).sum())
    tokens = int(pd.to_numeric(records.get("prompt_tokens", pd.Series(dtype=float))).fillna(0).sum())
    return {
        "gold_used": session.used,
        "budget": b,
        "items": len(records),
        "teacher_calls": len(records) + selection.extra_teacher_calls,
        "teacher_tokens": tokens + selection.extra_teacher_tokens,
        "extra_teacher_calls": selection.extra_teacher_calls,
        "teacher_errors": int(wrong.sum()),
        "errors_caught": caught,
        "errors_caught_precision": caught / int(chosen.sum()) if chosen.any() else None,
        "errors_caught_recall": caught / int(wrong.sum()) if wrong.any() else None,
        "kept": int(kept.sum()),
        "noise_rate": float(np.mean(labels[kept] != gold[kept])) if kept.any() else None,
        **selection.info,
    }


for _module in ("random", "entropy", "ensemble", "confident", "learned", "soft"):  # each registers itself
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["ACTIONS", "POLICIES", "GoldOracle", "MitigationResult", "PolicyInput", "PolicySpec", "Selection",
           "apply_policy", "policy_input", "policy_spec", "register_policy", "resolve_budget", "select", "teacher_arrays"]
