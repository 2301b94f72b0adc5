"""Claims: declared comparisons evaluated against stored results, with their uncertainty."""
import pytest

from helpers import claimlist, claims, report, results, transfer_study as study
from helpers.claimlist import trials


def store(results_dir, notebook, name, acc):
    results.write_json({"results": {"name": name, "test": {"acc": acc}}}, results_dir / f"{notebook}_{name}.json")


def claim(says, subject=trials("new"), reference=trials("base"), metric="test.acc", **extra):
    return claims.Claim(id="t-claim", notebook="99", says=says, metric=metric, subject=subject,
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


def test_each_claim_macro_comes_with_its_signed_difference_for_listing_sentences(stored):
    store(stored, "99", "variant", 0.93)
    store(stored, "99", "below", 0.8855)
    above, below = (claims.evaluate(claim("higher", subject=(name,), reference=("base_trial0",),
                                          noise=trials("base")), stored) for name in ("variant", "below"))
    assert (above.short(), below.short()) == ("+3.00", "−1.45")
    text = claims.macros_text([below])
    assert "\\newcommand{\\ClaimTClaim}{New vs base: no measurable difference" in text
    assert "\\newcommand{\\ClaimTClaimDiff}{\\textminus{}1.45}" in text


def test_a_verdict_summary_names_the_variants_that_differ_and_counts_the_rest(stored):
    for name, acc in (("up", 0.99), ("down", 0.80), ("flat", 0.905), ("flat2", 0.91)):
        store(stored, "99", name, acc)
    judged = {name: claims.evaluate(claims.Claim(
        id="t-claim", notebook="99", says="no difference", metric="test.acc", subject=(name,),
        reference=trials("base"), noise=trials("base"), what="test accuracy", subject_label=f"the {name} run"),
        stored) for name in ("up", "down", "flat", "flat2")}
    assert claims.verdict_summary(list(judged.values())) == ("higher test accuracy with the up run; lower test "
                                                             "accuracy with the down run; no measurable difference "
                                                             "with the flat run and the flat2 run")
    assert claims.verdict_summary([judged["flat"]]) == "no measurable difference with the flat run"
    assert claims.verdict_summary([judged["flat"]] * 4) == "no measurable difference with all 4"
    with pytest.raises(ValueError, match="at least one"):
        claims.verdict_summary([])


def test_a_reference_stored_under_another_metric_is_read_there_with_its_noise(stored):
    results.write_json({"results": {"name": "other", "charged": 0.99}}, stored / "99_other.json")
    evaluation = claims.evaluate(claim("higher", subject=("other",), reference=("base_trial0",), noise=trials("base"),
                                       metric="charged", reference_metric="test.acc"), stored)
    assert evaluation.reference == [0.90] and evaluation.uncertainty == pytest.approx(0.02) and evaluation.holds
    paired = claims.evaluate(claim("higher", subject=("one",), reference=("one",), metric="a", reference_metric="b"),
                             _paired_lists(stored))
    assert paired.method == "seeds" and paired.subject == [2.0, 3.0, 4.5] and paired.holds
    results.write_json({"results": [{"test": 0.50}, {"test": 0.93}]}, stored / "99_curve.json")  # rows of one record
    row = claims.evaluate(claim("higher", subject=("curve",), reference=("curve",), noise=trials("base"),
                                metric="[1].test", reference_metric="[0].test", noise_metric="test.acc"), stored)
    assert (row.subject, row.reference, row.method) == ([0.93], [0.50], "noise band") and row.holds
    assert row.uncertainty == pytest.approx(0.02)  # the band of the noise runs' own metric


def test_undefined_values_drop_their_pair_and_prompts_are_named_as_such(stored):
    nan = float("nan")
    record = {"results": {"name": "gen", "a": [2.0, nan, 3.0, 4.5, 5.0], "b": [1.0, 1.0, nan, 3.4, 4.1]}}
    results.write_json(record, stored / "99_gen.json")
    paired = claims.evaluate(claim("higher", subject=("gen",), reference=("gen",), metric="a", reference_metric="b",
                                   unit="prompts"), stored)
    assert paired.subject == [2.0, 4.5, 5.0] and paired.reference == [1.0, 3.4, 4.1]
    assert "3 prompts each, paired t-test" in paired.wording()
    record["results"]["a"][3] = nan
    results.write_json(record, stored / "99_gen.json")
    with pytest.raises(claims.ClaimError, match="only 2 prompts have both values"):
        claims.evaluate(claim("higher", subject=("gen",), reference=("gen",), metric="a", reference_metric="b",
                              unit="prompts"), stored)


def test_unpaired_sides_get_welchs_test(stored):
    store(stored, "99", "extra", 0.97)
    evaluation = claims.evaluate(claim("higher", subject=(*trials("new"), "extra"), paired=False), stored)
    assert evaluation.method == "welch" and evaluation.holds and "4 vs 3 seeds, Welch t-test" in evaluation.wording()


def _paired_lists(results_dir):
    """One record holding two lists of per-prompt values (a generation study): paired by position."""
    record = {"results": {"name": "one", "a": [2.0, 3.0, 4.5], "b": [1.0, 1.9, 3.4]}}
    results.write_json(record, results_dir / "99_one.json")
    return results_dir


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


def test_the_claims_table_groups_verdicts_by_reference_and_test(stored):
    store(stored, "99", "variant", 0.93)
    seeded = claims.evaluate(claim("higher"), stored)
    single = claims.evaluate(claim("higher", subject=("variant",), reference=("base_trial0",), noise=trials("base")),
                             stored)
    table = claims.latex_table([seeded, single, single], "99")
    assert "\\label{tab:99-claims}" in table
    rows = [line for line in table.splitlines() if line.endswith("\\\\")][1:]  # after the header
    assert rows[0].startswith("\\multicolumn{4}") and "against base: 3 seeds each, paired t-test" in rows[0]
    assert rows[1].startswith("New: test accuracy & +5.00 pt & p = ")
    assert "against base: single runs against ±2 sd of 3 seeds" in rows[2]
    assert rows[3] == rows[4] == "New: test accuracy & +3.00 pt & ±2.00 pt & higher \\\\"  # one heading per group
    assert len(rows) == 5


def test_check_fails_on_a_contradicted_claim_and_on_stale_macros(stored, tmp_path, monkeypatch):
    wrong = claim("higher", subject=trials("same"))
    monkeypatch.setattr(claims, "declared", lambda notebook=None: [wrong])
    problems = report.claim_problems(stored, tmp_path)
    assert any("says higher but the data say no difference" in p for p in problems)
    assert any("99_claims_macros.tex is missing or stale" in p for p in problems)
    assert any("99_claims.tex is missing or stale" in p for p in problems)


def test_the_committed_claims_hold_and_the_known_wrong_statements_come_out_right():
    """The report once said BN's validation curves rise faster (GTSRB) and that the combination beats the
    baseline; the stored results say otherwise at 3 seeds, and the declared claims say what they say. Notebook
    01's tutorial rows are judged against its baseline's seed noise."""
    evaluations = {c.id: claims.evaluate(c) for c in claims.declared()}
    assert all(e.holds for e in evaluations.values()), [e.wording() for e in evaluations.values() if not e.holds]
    assert evaluations["03-bn-epoch-one"].verdict == "no difference"
    assert evaluations["03-bn-adamw-vs-adamw-epoch-one"].difference < 0
    assert evaluations["03-bn-adamw-vs-bn-test"].verdict == "no difference"  # the optimiser, BN fixed
    factorial = ("bn", "adamw", "bn-adamw-vs-adamw", "bn-adamw-vs-bn")  # each factor at either level of the other
    assert {c.id for c in claims.declared("03")} == {f"03-{s}-{m}" for s in factorial for m in ("test", "epoch-one")}
    tutorial = ("dropout", "l2", "augmentation", "combined")  # each regulariser against the baseline's seed noise
    explored = {f"01-{r.replace('_', '-').lower()}-test" for r in claimlist.EXPLORE_LABELS}  # vs the reference's seeds
    assert {c.id for c in claims.declared("01")} == {f"01-{r}-{m}" for r in tutorial for m in ("test", "gap")} | {
        "01-se-test"} | explored  # squeeze-and-excitation against the plain AirNet's seeds
    assert len(explored) == 19 and "01-norm-dropout-dropout-bn-test" in explored
    assert {evaluations[f"01-{r}-gap"].method for r in tutorial} == {"noise band"}
    assert evaluations["01-dropout-gap"].verdict == "lower"  # dropout closes the baseline's over-fitting gap
    transfer = {c.id: evaluations[c.id] for c in claims.declared("02")}  # every 02 study judged by seeds
    assert {e.method for e in transfer.values()} == {"seeds", "noise band"} and len(transfer) >= 20
    assert transfer["02-augmentation-gap"].verdict == "lower"  # augmentation closes the reference's gap
    assert transfer["02-l2-wd0p5-test"].verdict == "no difference"  # L2 at a strength that shrinks weights
    curves = {name: results.read_json(report.PROJECT_ROOT / "results" / f"02_pruning_{name}.json")["results"]
              for name in study.PRUNING_RECIPES}  # the pruning claims name the recipe validation chose
    assert study.chosen_on_validation(curves) == claimlist.PRUNING_CHOICE
    assert report.claim_problems(report.PROJECT_ROOT / "results", report.REPORT_DIR / "generated") == []


def test_tiny_p_values_are_not_printed_as_zero():
    evaluation = claims.Evaluation(claim("higher"), "higher", "seeds", [1.0] * 3, [0.0] * 3, 1.0, 1e-6)
    assert "paired t-test p < 0.001" in evaluation.wording()
    assert "p = 0.012" in claims.Evaluation(claim("higher"), "higher", "seeds", [1.0] * 3, [0.0] * 3, 1.0,
                                            0.012).wording()
