"""The regulariser's weight is chosen by Moskalev et al.'s rule: the first weight, in increasing
order, whose CNN reaches the SI target; the largest (said so) when none does."""
from types import SimpleNamespace

import pandas as pd

from geed.experiments import beyond as bx
from geed.experiments import section41


def _fake(monkeypatch, si_of_weight: dict) -> list:
    trained = []

    def trained_models(params, families):
        (label, fields), = families.items()
        trained.append(fields["invariance_weight"])
        w = fields["invariance_weight"]
        return {label: [SimpleNamespace(model=lambda: w, test_accuracy=0.9)]}

    monkeypatch.setattr(section41, "trained_models", trained_models)
    monkeypatch.setattr(bx, "saliency_invariance", lambda model, x, y, g, steps: SimpleNamespace(value=si_of_weight[model]))
    return trained


PARAMS = dict(seed=0, si_points=4, si_steps=2, si_target=0.95, reg_weights=[10.0, 1.0, 3.0, 30.0])


def test_the_first_weight_that_reaches_the_target_is_chosen_and_no_larger_one_is_trained(monkeypatch):
    trained = _fake(monkeypatch, {1.0: 0.5, 3.0: 0.96, 10.0: 0.99, 30.0: 1.0})
    table = bx.tune_regulariser(PARAMS, progress=False)
    assert trained == [1.0, 3.0]  # increasing order, stopped at the first success
    assert table.loc[table.chosen, "weight"].tolist() == [3.0] and table["reached"].tolist() == [False, True]
    assert bx.tuning_sentence(table, 0.95).startswith("weight 3 (tried 1, 3): the first to reach SI 0.960")


def test_when_no_weight_reaches_the_target_the_largest_is_used_and_the_sentence_says_so(monkeypatch):
    trained = _fake(monkeypatch, {1.0: 0.5, 3.0: 0.6, 10.0: 0.7, 30.0: 0.8})
    table = bx.tune_regulariser(PARAMS, progress=False)
    assert trained == [1.0, 3.0, 10.0, 30.0]
    assert table.loc[table.chosen, "weight"].tolist() == [30.0] and not table["reached"].any()
    assert "no weight reached SI 0.95 (the largest gives 0.800)" in bx.tuning_sentence(table, 0.95)
    assert isinstance(table, pd.DataFrame)


def test_when_the_largest_weight_is_not_the_most_invariant_the_sentence_names_both(monkeypatch):
    _fake(monkeypatch, {1.0: 0.70, 3.0: 0.77, 10.0: 0.89, 30.0: 0.71})
    table = bx.tune_regulariser(PARAMS, progress=False)
    assert table.loc[table.chosen, "weight"].tolist() == [30.0]  # the rule fixed in advance is unchanged
    sentence = bx.tuning_sentence(table, 0.95)
    assert "weight 10 gave the highest SI (0.890" in sentence and "are given for weight 10 as well" in sentence
    monotone = table.assign(**{"SI (held-out training digits)": [0.5, 0.6, 0.7, 0.8]})
    assert "highest SI" not in bx.tuning_sentence(monotone, 0.95)


def test_the_si_target_is_measured_on_training_digits_held_out_from_every_evaluation(monkeypatch):
    """The digits the rule measures SI on are rotated *training* digits: the chapter's evaluations use the
    test split, so choosing the weight on them would tune to the data that judges it."""
    from geed.data import digits

    _fake(monkeypatch, {1.0: 0.99, 3.0: 0.99, 10.0: 0.99, 30.0: 0.99})
    splits = []
    real = digits.rotated_digits
    monkeypatch.setattr(digits, "rotated_digits", lambda split="test", *a, **k: splits.append(split) or real(split, *a, **k))
    bx.tune_regulariser(PARAMS, progress=False)
    assert splits == ["train"]
