import math

import pytest
import torch

from helpers import grpo


def test_groups_of_is_prompt_major():
    assert grpo.groups_of([1, 2, 3, 4, 5, 6], 3) == [[1, 2, 3], [4, 5, 6]]
    with pytest.raises(ValueError, match="groups of 4"):
        grpo.groups_of([1, 2, 3], 4)


def test_advantages_match_trl_formula():
    r = [0.0, 0.5, 1.0, 1.0]
    t = torch.tensor(r)
    expected = ((t - t.mean()) / (t.std() + 1e-4)).tolist()  # torch.std is Bessel-corrected, like TRL's nanstd
    assert grpo.group_advantages(r) == pytest.approx(expected, rel=1e-6)
    assert sum(grpo.group_advantages(r)) == pytest.approx(0.0, abs=1e-9)
    assert grpo.group_advantages(r, scale=False) == pytest.approx([-0.625, -0.125, 0.375, 0.375])


def test_equal_rewards_give_zero_advantage_and_count_as_zero_std():
    assert grpo.group_advantages([1.0] * 8) == [0.0] * 8
    assert grpo.group_advantages([-1.0] * 4) == [0.0] * 4
    groups = [[1, 1, 1], [0, 1, 0], [-1, -1, -1], [0.2, 0.2000001, 0.2]]
    assert grpo.frac_zero_std(groups) == 0.75
    assert math.isnan(grpo.frac_zero_std([]))


def test_dynamic_filter_band():
    assert not grpo.keep_group([0, 0, 0, 0])          # all fail: no signal
    assert not grpo.keep_group([1, 1, 1, 1])          # all solved: no signal
    assert grpo.keep_group([0, 1, 0, 0])
    assert not grpo.keep_group([0.995, 1.0])          # mean 0.9975 is outside (0.01, 0.99)
    assert not grpo.keep_group([0.5, 0.5, 0.5])       # mid-band but no variance: no gradient either
    assert grpo.keep_group([0.4, 0.6])
    stats = grpo.filter_stats([[0, 0], [0, 1], [1, 1], [0.5, 0.5], [0.2, 0.3]])
    assert stats == {"groups": 5, "kept": 2, "kept_fraction": 0.4}


def test_to_unit():
    assert grpo.to_unit(-1.0, -1, 1) == 0.0 and grpo.to_unit(1.0, -1, 1) == 1.0 and grpo.to_unit(0, -3, 3) == 0.5


def test_learnable_band_keeps_prompts_whose_samples_disagree():
    groups = [[1, 1, 1, 1], [0, 0, 0, 0], [0, 1, 0, 0], [-1, -1, 0.4, -1], [0.5], []]
    assert grpo.learnable_band(groups) == [False, False, True, True, False, False]
    # a difference below the tolerance is no signal: GRPO's advantages would be (near) zero
    assert grpo.learnable_band([[0.5, 0.5 + 1e-9]]) == [False]
    # every group the band keeps has a non-zero GRPO advantage somewhere
    for g, keep in zip(groups, grpo.learnable_band(groups)):
        if keep:
            assert any(abs(a) > 0.1 for a in grpo.group_advantages(g))


def test_pass_rate_counts_full_rewards_only():
    assert grpo.pass_rate([1, 0, 1, 0.99]) == 0.5
    assert grpo.pass_rate([1.0, 1.0]) == 1.0 and grpo.pass_rate([0, -1]) == 0.0
    assert math.isnan(grpo.pass_rate([]))


def test_effective_updates_count_steps_with_an_advantage():
    rows = [{"reward": 0.5, "frac_reward_zero_std": 0.0, grpo.KEPT_FRACTION_KEY: 1.0},
            {"reward": 1.0, "frac_reward_zero_std": 1.0, grpo.KEPT_FRACTION_KEY: 0.0},
            {"reward": 0.2, "frac_reward_zero_std": 0.5, grpo.KEPT_FRACTION_KEY: 0.0},   # variance, but filtered out
            {"train_runtime": 12.0}]                                                       # TRL's closing summary row
    assert grpo.effective_updates(rows) == 1
    assert grpo.effective_updates([]) == 0
