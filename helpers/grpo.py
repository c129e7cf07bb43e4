"""GRPO on TRL: the group arithmetic every lesson shares, and (later) the trainer wiring.

The group functions are pure Python, so notebook 01 can show what GRPO would do with a set of rewards
without a trainer, and the tests run in milliseconds. TRL is imported lazily by the trainer helpers.
"""

from __future__ import annotations

import math
from statistics import fmean, stdev

# -----------------------------------------------------------------------------
# config
ADV_EPS = 1e-4          # TRL adds this to the group std before dividing
ZERO_STD_TOL = 1e-6     # a group whose rewards differ by less than this teaches nothing
# STAR / DAPO dynamic filtering: keep a group only if its mean reward lies strictly inside this band.
FILTER_LOW, FILTER_HIGH = 0.01, 0.99
# -----------------------------------------------------------------------------


def groups_of(values: list, group_size: int) -> list[list]:
    """Split a prompt-major flat list (G completions of prompt 0, then prompt 1, ...) into groups."""
    if group_size <= 0 or len(values) % group_size:
        raise ValueError(f"{len(values)} values do not split into groups of {group_size}")
    return [list(values[i:i + group_size]) for i in range(0, len(values), group_size)]


def group_advantages(rewards: list[float], scale: bool = True, eps: float = ADV_EPS) -> list[float]:
    """GRPO's group-relative advantage (DeepSeekMath, eq. 3 with outcome supervision):

        A_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)

    With scale=False only the mean is removed (Dr. GRPO). When every reward in the group is equal,
    every advantage is 0 and the group contributes no policy gradient: the reason reward variance
    inside a group matters. The std is the sample std (Bessel-corrected), as TRL computes it."""
    if not rewards:
        return []
    mu = fmean(rewards)
    sd = stdev(rewards) if scale and len(rewards) > 1 else 0.0
    return [(r - mu) / (sd + eps) if scale else r - mu for r in rewards]


def zero_std(rewards: list[float], tol: float = ZERO_STD_TOL) -> bool:
    return (max(rewards) - min(rewards)) <= tol if rewards else True


def frac_zero_std(groups: list[list[float]]) -> float:
    """Fraction of groups with no reward variance: TRL logs it as ``frac_reward_zero_std``."""
    return sum(zero_std(g) for g in groups) / len(groups) if groups else math.nan


def keep_group(rewards: list[float], low: float = FILTER_LOW, high: float = FILTER_HIGH) -> bool:
    """Dynamic filtering (DAPO; STAR keeps groups whose mean accuracy is in (0.01, 0.99)): drop a group
    whose mean reward is outside (low, high), i.e. one that every sample (nearly) fails or solves.
    For a 0/1 reward that is the same as dropping groups without variance; for a graded reward a group
    can sit mid-band with every sample equal (all 0 under Sim-RL, say), so zero-std groups are dropped
    too: they carry no gradient either way. The band assumes rewards in [0, 1]; rescale others first."""
    return low < fmean(rewards) < high and not zero_std(rewards)


def filter_stats(groups: list[list[float]], low: float = FILTER_LOW, high: float = FILTER_HIGH) -> dict:
    kept = [keep_group(g, low, high) for g in groups]
    return {"groups": len(groups), "kept": sum(kept), "kept_fraction": sum(kept) / len(groups) if groups else math.nan}


def to_unit(reward: float, low: float, high: float) -> float:
    """Map a reward from [low, high] to [0, 1], for filtering rewards such as Sim-RL's [-1, 1]."""
    return (reward - low) / (high - low)
