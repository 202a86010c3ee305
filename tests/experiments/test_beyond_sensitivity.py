"""When the rule for the regulariser's weight falls back on a weight that is not the most invariant
tried, every claim that involves the regularised CNN is judged again at the most invariant weight, by
the same rules, and both verdicts are shown; the rule's verdict stays the ledger's."""
import numpy as np
import pandas as pd

from geed.experiments import beyond as bx

SEEDS = (0, 1, 2)


def _tuning(si: dict, chosen: float) -> pd.DataFrame:
    return pd.DataFrame([{"weight": w, "SI (held-out training digits)": v, "test accuracy": 0.9, "reached": v >= 0.95, "chosen": w == chosen}
                         for w, v in si.items()])


def test_the_most_invariant_weight_is_named_only_when_the_rule_chose_another():
    assert bx.most_invariant_weight(_tuning({1.0: 0.70, 3.0: 0.77, 10.0: 0.89, 30.0: 0.71}, 30.0)) == 10.0
    assert bx.most_invariant_weight(_tuning({1.0: 0.70, 3.0: 0.77, 10.0: 0.89, 30.0: 0.91}, 30.0)) is None  # monotone
    assert bx.most_invariant_weight(_tuning({1.0: 0.70, 3.0: 0.96}, 3.0)) is None  # the first to reach the target


def _lvg(di_regularised: list[float]) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for model, di in (("augmentation CNN", [0.30, 0.32, 0.31]), ("C8-CNN", [0.05, 0.06, 0.05]), ("regularised CNN", di_regularised)):
        for g in ("C4", "C8"):
            for beta in (0.0, 1.0):
                for s in SEEDS:
                    rows.append({"model": model, "seed": s, "group": g, "beta": beta, "metric": "DI", "value": di[s] + 0.01 * beta})
                    rows.append({"model": model, "seed": s, "group": g, "beta": beta, "metric": "SI",
                                 "value": (0.9 if model == "C8-CNN" else 0.4) + 0.01 * rng.standard_normal()})
    return pd.DataFrame(rows)


def _cont(sigma_regularised: list[float]) -> pd.DataFrame:
    return pd.DataFrame([{"model": m, "seed": s, "Jacobian spectral norm": v[s]}
                         for m, v in (("augmentation CNN", [5.0, 5.2, 5.1]), ("regularised CNN", sigma_regularised)) for s in SEEDS])


def _tables(sensitivity) -> dict:
    ctl = pd.DataFrame([{"model": m, "seed": s, "dataset": "uniform-noise", "response to random perturbations": r + 0.01 * s}
                        for m, r in (("augmentation CNN", 0.5), ("untrained CNN", 0.1)) for s in SEEDS])
    perms = pd.DataFrame([{"model": m, "seed": s, "block": "b1", "variant": v, "metric": "channelwise C8-EED", "value": x + 0.01 * s}
                          for m, v, x in (("augmentation CNN", "matched permutation", 0.5), ("C8-CNN", "declared action", 0.1)) for s in SEEDS]
                         + [{"model": "C8-CNN", "seed": s, "block": "b1", "variant": "matched permutation",
                             "metric": "agreement with declared permutation", "value": 1.0} for s in SEEDS])
    # at the rule's weight the regularised CNN is no more invariant than the augmentation CNN
    return {"lvg": _lvg([0.30, 0.33, 0.29]), "control": ctl, "permutations": perms, "continuous": _cont([5.1, 5.0, 5.3]),
            "group": "C8", "reg_weight": 30.0, "sensitivity": sensitivity}


def test_claims_on_the_regularised_cnn_are_judged_again_at_the_most_invariant_weight():
    other = {"weight": 10.0, "lvg": _lvg([0.05, 0.06, 0.04]).query("model == 'regularised CNN'"),
             "continuous": _cont([1.0, 1.1, 0.9]).query("model == 'regularised CNN'"),
             "accuracy": pd.DataFrame({"model": "regularised CNN", "seed": SEEDS, "accuracy": [0.6, 0.6, 0.6]})}
    tables = _tables(other)
    table = bx.sensitivity(tables)
    assert set(table["id"]) == {"M-3-C4", "M-3-C8", "M-4"}  # the claims that involve the regularised CNN, and only those
    assert (table["verdict"] != "holds").all() and (table["verdict at other weight"] == "holds").all()
    primary = {cid: v.verdict for cid, _, _, v, _ in bx.claims(tables)}
    assert all(primary[r["id"]] == r["verdict"] for _, r in table.iterrows())  # the ledger keeps the rule's verdict
    notes = bx.sensitivity_notes(tables, table)
    assert set(notes) == set(table["id"])
    assert notes["M-4"].startswith("With the regulariser's weight at 10 (the most invariant tried) instead of the rule's 30: holds (")


def test_nothing_is_judged_again_when_the_rules_weight_is_the_most_invariant():
    tables = _tables(None)
    assert bx.sensitivity(tables).empty and bx.sensitivity_notes(tables, bx.sensitivity(tables)) == {}


def test_the_chapter_trains_and_measures_the_regularised_cnn_at_the_other_weight_only_when_needed(monkeypatch):
    from types import SimpleNamespace

    from geed.experiments import section41

    trained, measured = [], []

    def trained_models(params, families):
        out = {}
        for label, fields in families.items():
            w = fields.get("invariance_weight")
            trained.append((label, w, params["n_models"]))
            out[label] = [SimpleNamespace(config=SimpleNamespace(seed=s, name=lambda s=s, w=w, label=label: f"{label}-{w}-{s}"),
                                          model=lambda w=w: ("model", w), test_accuracy=0.5) for s in range(params["n_models"])]
        return out

    def record(name):
        def analysis(models, *args, **kwargs):
            measured.append((name, {label: [m for _, m in members] for label, members in models.items()}))
            return pd.DataFrame({"model": list(models)})
        return analysis

    monkeypatch.setattr(section41, "trained_models", trained_models)
    for name in ("learned_vs_genuine", "insensitivity_control", "hidden_permutations", "continuous_vs_discrete"):
        monkeypatch.setattr(bx, name, record(name))
    import geed.models

    monkeypatch.setattr(geed.models, "create_model", lambda *a, **k: SimpleNamespace(eval=lambda: "untrained"))
    params = dict(seed=0, width=0.05, n_models=2, si_points=4, si_steps=2, si_target=0.95, reg_weights=[1.0, 3.0, 10.0, 30.0], betas=[0.0, 1.0],
                  n_points=4, control_sets=["uniform-noise"], n_fit=4, power_iterations=2, group="C8")
    for si, other in (({1.0: 0.70, 3.0: 0.77, 10.0: 0.89, 30.0: 0.71}, 10.0), ({1.0: 0.70, 3.0: 0.96}, None)):
        trained.clear(), measured.clear()
        monkeypatch.setattr(bx, "saliency_invariance", lambda model, x, y, g, steps, si=si: SimpleNamespace(value=si[model[1]]))
        tables = bx.run(params, cache=None, progress=False)
        chosen = tables["reg_weight"]
        if other is None:
            assert tables["sensitivity"] is None
            assert [n for n, _ in measured] == ["learned_vs_genuine", "insensitivity_control", "hidden_permutations", "continuous_vs_discrete"]
            continue
        assert chosen == 30.0 and tables["sensitivity"]["weight"] == other
        assert ("regularised CNN", other, 2) in trained  # all seeds at the other weight, not only the tuning run's
        again = [(n, models) for n, models in measured[4:]]
        assert [n for n, _ in again] == ["learned_vs_genuine", "continuous_vs_discrete"]
        assert all(models == {"regularised CNN": [("model", other)] * 2} for _, models in again)  # only that model, at that weight
