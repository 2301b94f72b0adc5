"""Claims as data: every comparison a notebook or the report states is declared here and evaluated
against the stored results, with its uncertainty.

A claim compares a metric of `subject` runs with the same metric of `reference` runs and says which
way it goes (`says`: "higher", "lower" or "no difference"). It is evaluated one of two ways:

- seeds: subject and reference each have >= 3 runs, paired by seed: a two-sided paired t-test on the
  per-seed differences; p < ALPHA gives "higher" or "lower", anything else "no difference";
- noise band: single runs, and `noise` names >= 3 runs (seeds) of the study's reference
  configuration; a difference within NOISE_BAND standard deviations of that seed noise is "no
  difference" ("no measurable difference at this budget").

A claim whose data disagrees with what it says is contradicted; `python -m helpers.report check`
fails on it. The wording printed in notebooks and defined as report macros (`\\ClaimXyz`) is generated
from the evaluation, so prose that uses it cannot drift from the data.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from . import results
from .results import sample_sd
from .repro import PROJECT_ROOT

ALPHA = 0.05
NOISE_BAND = 2.0  # standard deviations of the seed noise
MIN_SEEDS = 3
VERDICTS = ("higher", "lower", "no difference")


class ClaimError(ValueError):
    """A claim cannot be evaluated as declared; the message names the fix."""


@dataclass(frozen=True)
class Claim:
    """One declared comparison over stored results (names without the notebook prefix)."""

    id: str
    notebook: str
    says: str
    metric: str
    subject: tuple
    reference: tuple
    noise: tuple = ()
    what: str = ""             # the quantity, as a reader says it: "test accuracy"
    subject_label: str = ""
    reference_label: str = ""
    percent: bool = True       # show values as percentages
    reference_metric: str = ""  # the reference's metric, when it is stored under another name (default: metric)
    noise_metric: str = ""     # the noise runs' metric, when they are another kind of record (default: the reference's)
    unit: str = "seeds"        # what the repeated values are: seeds, or prompts (generated text)
    paired: bool = True        # False: the two sides share nothing to pair (Welch's t-test)

    def __post_init__(self):
        if self.says not in VERDICTS:
            raise ClaimError(f"claim {self.id}: says={self.says!r}; use one of {', '.join(VERDICTS)}")
        if not re.fullmatch(r"[a-z0-9-]+", self.id):
            raise ClaimError(f"claim id {self.id!r}: use lower-case letters, digits and '-'")


@dataclass
class Evaluation:
    claim: Claim
    verdict: str
    method: str
    subject: list
    reference: list
    difference: float
    uncertainty: float  # p-value (seeds) or the band's half-width (noise band)

    @property
    def holds(self) -> bool:
        return self.verdict == self.claim.says

    def _show(self, value: float) -> str:
        return f"{100 * value:.2f}" if self.claim.percent else f"{value:.4f}"

    def value(self, values: list) -> str:
        mean = sum(values) / len(values)
        return self._show(mean) if len(values) < 2 else f"{self._show(mean)} ± {self._show(sample_sd(values))}"

    def design(self) -> str:
        """How the verdict is reached, without its number: '3 seeds each, paired t-test'."""
        if self.method == "seeds":
            return f"{len(self.subject)} {self.claim.unit} each, paired t-test"
        if self.method == "welch":
            return f"{len(self.subject)} vs {len(self.reference)} {self.claim.unit}, Welch t-test"
        return f"single runs against ±{NOISE_BAND:g} sd of {len(self.claim.noise)} seeds"

    def p_text(self) -> str:
        """A t-test's p as printed: 'p = 0.012', or 'p < 0.001' rather than a zero."""
        return "p < 0.001" if self.uncertainty < 0.001 else f"p = {self.uncertainty:.3f}"

    def evidence(self) -> str:
        if self.method == "noise band":
            return f"single runs; seed-noise band ±{self._show(self.uncertainty)} from {len(self.claim.noise)} seeds"
        return f"{self.design()} {self.p_text()}"

    def short(self) -> str:
        """The signed difference alone, for a sentence that lists many claims: '−0.94' (points when percent)."""
        shown = self._show(abs(self.difference))
        return f"{'−' if self.difference < 0 else '+'}{shown}"

    def wording(self) -> str:
        """The sentence a notebook prints and the report's \\Claim macro holds."""
        c = self.claim
        numbers = f"{self.value(self.subject)} vs {self.value(self.reference)}{' %' if c.percent else ''}"
        if self.verdict == "no difference":
            said = f"{c.subject_label} vs {c.reference_label}: no measurable difference in {c.what} at this budget"
        else:
            said = f"{c.subject_label} has {self.verdict} {c.what} than {c.reference_label}"
        return f"{said[0].upper()}{said[1:]} ({numbers}; {self.evidence()})."


def _parse(path: str) -> list:
    return [int(p) if re.fullmatch(r"-?\d+", p) else p for p in re.findall(r"[^.\[\]]+", path)]


def metric_value(record: dict, metric: str):
    """A metric from a stored result: a dotted path ('test.acc', 'history.epochs[0].val_acc'), or the
    difference of two ('history.epochs[-1].val_loss - history.epochs[-1].train_loss')."""
    if " - " in metric:
        left, right = metric.split(" - ", 1)
        return metric_value(record, left) - metric_value(record, right)
    value = record
    for key in _parse(metric):
        try:
            value = value[key]
        except (KeyError, IndexError, TypeError):
            raise ClaimError(f"metric {metric!r}: no {key!r} in the stored result") from None
    return value


def _values(notebook: str, names: tuple, metric: str, results_dir: Path) -> list:
    values = []
    for name in names:
        path = results_dir / f"{notebook}_{name}.json"
        if not path.exists():
            raise ClaimError(f"results file {path} is missing: run notebook {notebook} "
                             f"(make reproduce ONLY={notebook})")
        value = metric_value(results.read_json(path)["results"], metric)
        values += [float(v) for v in value] if isinstance(value, list) else [float(value)]
    return values


def _defined_pairs(claim: Claim, subject: list, reference: list) -> tuple:
    """Drop the pairs where either value is undefined (NaN: e.g. a sample too short for a 4-gram)."""
    pairs = [(s, r) for s, r in zip(subject, reference) if not (math.isnan(s) or math.isnan(r))]
    if len(pairs) < MIN_SEEDS:
        raise ClaimError(f"claim {claim.id}: only {len(pairs)} {claim.unit} have both values defined; "
                         f"a test needs >= {MIN_SEEDS}")
    return [s for s, _ in pairs], [r for _, r in pairs]


def _t_test(claim: Claim, subject: list, reference: list) -> tuple:
    """(method, p): paired over seeds/prompts, or Welch's test when the two sides share nothing to pair."""
    from scipy.stats import ttest_ind

    if not claim.paired:
        return "welch", float(ttest_ind(subject, reference, equal_var=False).pvalue)
    return "seeds", results.paired_p(subject, reference)


def evaluate(claim: Claim, results_dir: Path | None = None) -> Evaluation:
    """The claim's verdict from the stored results under `results_dir` (default: the committed ones)."""
    results_dir = Path(results_dir or PROJECT_ROOT / "results")
    subject = _values(claim.notebook, claim.subject, claim.metric, results_dir)
    reference_metric = claim.reference_metric or claim.metric
    reference = _values(claim.notebook, claim.reference, reference_metric, results_dir)
    if len(subject) >= MIN_SEEDS and (len(subject) == len(reference) or not claim.paired):
        if claim.paired:
            subject, reference = _defined_pairs(claim, subject, reference)
        method, p = _t_test(claim, subject, reference)
        p = 1.0 if math.isnan(p) else p
        difference = sum(subject) / len(subject) - sum(reference) / len(reference)
        verdict = "no difference" if p >= ALPHA else ("higher" if difference > 0 else "lower")
        return Evaluation(claim, verdict, method, subject, reference, difference, p)
    if len(claim.noise) < MIN_SEEDS:
        raise ClaimError(f"claim {claim.id}: {len(subject)} vs {len(reference)} runs and {len(claim.noise)} noise "
                         f"runs; give both sides >= {MIN_SEEDS} seeds, or name >= {MIN_SEEDS} seeds of the "
                         f"reference configuration as `noise`")
    difference = sum(subject) / len(subject) - sum(reference) / len(reference)
    band = NOISE_BAND * sample_sd(_values(claim.notebook, claim.noise, claim.noise_metric or reference_metric,
                                          results_dir))
    verdict = "no difference" if abs(difference) <= band else ("higher" if difference > 0 else "lower")
    return Evaluation(claim, verdict, "noise band", subject, reference, difference, band)


def verdict_summary(evaluations: list) -> str:
    """One clause over a study's single-variant claims against one reference: which variants came out higher,
    which lower, and which show no measurable difference (counted when more than three), e.g. 'lower test
    accuracy with Adam and AdamW; no measurable difference with the other 12'."""
    if not evaluations:
        raise ValueError("verdict_summary needs at least one evaluated claim")
    what = evaluations[0].claim.what
    by = {v: [e.claim.subject_label for e in evaluations if e.verdict == v] for v in VERDICTS}
    parts = [f"{v} {what} with {results.spoken_list(by[v])}" for v in ("higher", "lower") if by[v]]
    if by["no difference"]:  # named when few, counted when many
        n = len(by["no difference"])
        parts.append(f"no measurable difference with {'the other' if parts else 'all'} {n}" if n > 3 else
                     f"no measurable difference with {results.spoken_list(by['no difference'])}")
    return "; ".join(parts)


def macro(claim: Claim) -> str:
    """\\ClaimBnFasterAtEpochOne for id 'bn-faster-at-epoch-1'."""
    return "Claim" + results.macro_name(claim.id)


def declared(notebook: str | None = None) -> list:
    from .claimlist import CLAIMS

    ids = [c.id for c in CLAIMS]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ClaimError(f"claim ids declared twice: {', '.join(duplicates)}")
    return [c for c in CLAIMS if notebook is None or c.notebook == notebook]


def macros_text(evaluations: list) -> str:
    lines = ["% Generated by helpers.claims; do not edit by hand."]
    for e in evaluations:  # the sentence, and <macro>Diff: the signed difference a listing sentence quotes
        lines += [f"\\newcommand{{\\{macro(e.claim)}}}{{{results.latex_escape(e.wording())}}}",
                  f"\\newcommand{{\\{macro(e.claim)}Diff}}{{{results.latex_escape(e.short())}}}"]
    return "\n".join(lines) + "\n"


def evidence_cell(e: Evaluation) -> str:
    """The test's number behind a verdict, for a table cell: 'p = 0.012' or the band '±0.76 pt'."""
    if e.method == "noise band":
        return f"±{e._show(e.uncertainty)}{' pt' if e.claim.percent else ''}"
    return e.p_text()


def group_heading(e: Evaluation) -> str:
    """What a group of verdicts is compared with and how: the heading over its rows in the claims table."""
    borrowed = e.method == "noise band" and set(e.claim.noise) != set(e.claim.reference)  # another run's seeds
    elsewhere = " of the study's reference" if borrowed else ""
    return f"against {e.claim.reference_label}: {e.design()}{elsewhere}"


def row_of(e: Evaluation) -> dict:
    return dict(comparison=f"{e.claim.subject_label[0].upper()}{e.claim.subject_label[1:]}: {e.claim.what}",
                difference=e.short() + (" pt" if e.claim.percent else ""), evidence=evidence_cell(e), verdict=e.verdict)


def latex_table(evaluations: list, notebook: str) -> str:
    """Every declared comparison of a notebook as one table (the appendix's list of verdicts), grouped by what it is
    compared with and how: the subject and quantity, the difference of means, the band or p-value and the verdict;
    the numbers behind each are in the study's own table."""
    groups = {}  # heading -> its evaluations, in the order the headings first appear
    for e in evaluations:
        groups.setdefault(group_heading(e), []).append(e)
    rows = []
    for heading, members in groups.items():
        rows.append({results.GROUP_HEADING: heading})
        rows += [row_of(e) for e in members]
    columns = {"comparison": ("subject: quantity", "{}"), "difference": ("difference", "{}"),
               "evidence": ("band or p", "{}"), "verdict": ("verdict", "{}")}
    caption = (f"Notebook {notebook}: every stated comparison, checked on the stored results. Difference: subject "
               f"minus the reference's mean (pt: percentage points). A single run differs only outside ±{NOISE_BAND:g} "
               f"sd of the seed noise; a t-test needs p < {ALPHA}. 'no difference': none measurable at this budget. "
               "Each study's own table gives its runs' values and profile (data, epochs, seeds, device).")
    return results.latex_table(rows, columns, caption, f"tab:{notebook}-claims",
                               align=r">{\raggedright\arraybackslash}p{0.62\linewidth}rrl")


def generated(evaluations: list, notebook: str) -> dict:
    """The report files a notebook's claims make, by file name: their macros and their table."""
    mine = [e for e in evaluations if e.claim.notebook == notebook]
    return {f"{notebook}_claims_macros.tex": macros_text(mine), f"{notebook}_claims.tex": latex_table(mine, notebook)}


def conclude(run) -> None:
    """A notebook's closing cell: evaluate its declared claims on this run's stored results, print each
    wording with its verdict, and write them as report macros (report/generated/<nb>_claims_macros.tex).
    A claim this run's budget cannot check (e.g. the smoke profile's 2 trials) is printed as unchecked."""
    evaluations = []
    for claim in declared(run.notebook):
        try:
            evaluations.append(evaluate(claim, run.path("results")))
        except ClaimError as error:
            print(f"unchecked at this budget: {error}")
            continue
        e = evaluations[-1]
        print(("" if e.holds else f"CONTRADICTED (declared as {e.claim.says}): ") + e.wording())
    if evaluations:
        for name, text in generated(evaluations, run.notebook).items():
            run.path("tables", name).write_text(text, encoding="utf-8")


def table(evaluations: list) -> str:
    """Every claim with its numbers, as `python -m helpers.report claims` prints them."""
    rows = [f"{'claim':34} {'says':14} {'data':14} {'method':11} {'difference':>10} {'p / band':>9}  ok"]
    for e in evaluations:
        scale = 100 if e.claim.percent else 1
        rows.append(f"{e.claim.id:34} {e.claim.says:14} {e.verdict:14} {e.method:11} {scale * e.difference:>10.3f} "
                    f"{(scale * e.uncertainty if e.method == 'noise band' else e.uncertainty):>9.3f}  "
                    f"{'yes' if e.holds else 'NO'}")
    return "\n".join(rows)
