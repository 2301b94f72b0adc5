"""Claims: declared comparisons evaluated against stored results, with their uncertainty."""
import pytest

from helpers import claims, report, results
from helpers.claimlist import trials


def store(results_dir, notebook, name, acc):
    results.write_json({"results": {"name": name, "test": {"acc": acc}}}, results_dir / f"{notebook}_{name}.json")


def claim(says, subject=trials("new"), reference=trials("base"), **extra):
    return claims.Claim(id="t-claim", notebook="99", says=says, metric="test.acc", subject=subject,
                        reference=reference, what="test accuracy", subject_label="new", reference_label="base",
                        **extra)


@pytest.fixture
def stored(tmp_path):
    for k, (base, new, same) in enumerate(((0.90, 0.95, 0.905), (0.91, 0.97, 0.90), (0.92, 0.96, 0.92))):
        store(tmp_path, "99", f"base_trial{k}", base)
        store(tmp_path, "99", f"new_trial{k}", new)
        store(tmp_path, "99", f"same_trial{k}", same)
    return tmp_path


def test_seeds_give_a_paired_test_and_a_verdict(stored):
    higher = claims.evaluate(claim("higher"), stored)
    assert higher.method == "seeds" and higher.verdict == "higher" and higher.holds and higher.uncertainty < 0.05
    assert higher.difference == pytest.approx(0.05)
    assert "New has higher test accuracy than base (96.00 ± 1.00 vs 91.00 ± 1.00 %; 3 seeds each, paired t-test" \
        in higher.wording()
    inside = claims.evaluate(claim("higher", subject=trials("same")), stored)
    assert inside.verdict == "no difference" and not inside.holds
    assert "no measurable difference in test accuracy at this budget" in inside.wording()


def test_single_runs_are_judged_against_the_seed_noise_band(stored):
    store(stored, "99", "variant", 0.93)
    store(stored, "99", "far", 0.99)
    band = claim("no difference", subject=("variant",), reference=("base_trial0",), noise=trials("base"))
    evaluation = claims.evaluate(band, stored)
    assert evaluation.method == "noise band" and evaluation.uncertainty == pytest.approx(0.02)  # 2 sd of 0.01
    assert evaluation.verdict == "higher" and not evaluation.holds  # 0.03 above: outside ±0.02
    near = claims.evaluate(claim("no difference", subject=("same_trial0",), reference=("base_trial0",),
                                 noise=trials("base")), stored)
    assert near.holds and "seed-noise band ±2.00 from 3 seeds" in near.wording()


def test_a_claim_without_seeds_or_noise_band_cannot_be_checked(stored):
    with pytest.raises(claims.ClaimError, match="give both sides >= 3 seeds.*noise"):
        claims.evaluate(claim("higher", subject=("new_trial0",), reference=("base_trial0",)), stored)
    with pytest.raises(claims.ClaimError, match="99_gone_trial0.json is missing"):
        claims.evaluate(claim("higher", subject=trials("gone")), stored)
    with pytest.raises(claims.ClaimError, match="says='better'"):
        claim("better")


def test_metric_paths_index_histories_and_subtract():
    record = {"history": {"epochs": [{"val_acc": 0.5, "train_loss": 1.0}, {"val_acc": 0.7, "train_loss": 0.4}]}}
    assert claims.metric_value(record, "history.epochs[0].val_acc") == 0.5
    assert claims.metric_value(record, "history.epochs[-1].val_acc - history.epochs[-1].train_loss") == \
        pytest.approx(0.3)
    with pytest.raises(claims.ClaimError, match="no 'test'"):
        claims.metric_value(record, "test.acc")


def test_check_fails_on_a_contradicted_claim_and_on_stale_macros(stored, tmp_path, monkeypatch):
    wrong = claim("higher", subject=trials("same"))
    monkeypatch.setattr(claims, "declared", lambda notebook=None: [wrong])
    problems = report.claim_problems(stored, tmp_path)
    assert any("says higher but the data say no difference" in p for p in problems)
    assert any("99_claims_macros.tex is missing or stale" in p for p in problems)


def test_the_committed_claims_hold_and_the_known_wrong_statements_come_out_right():
    """The report once said BN's validation curves rise faster (GTSRB) and that the combination beats the
    baseline; the stored results say otherwise at 3 seeds, and the declared claims say what they say."""
    evaluations = {c.id: claims.evaluate(c) for c in claims.declared()}
    assert all(e.holds for e in evaluations.values()), [e.wording() for e in evaluations.values() if not e.holds]
    assert evaluations["03-bn-epoch-one"].verdict == "no difference"
    assert evaluations["03-bn-adamw-vs-adamw-epoch-one"].difference < 0
    assert evaluations["03-bn-adamw-test"].verdict == "no difference"
    assert report.claim_problems(report.PROJECT_ROOT / "results", report.REPORT_DIR / "generated") == []
