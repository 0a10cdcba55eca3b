""":class:`Evidence`, the result of :mod:`pytest_xp.stats`: its fields, JSON round trip, decision rule and message.

The verdict is always derived from the stored fields by :func:`decide`, so an Evidence rebuilt from
its dict, or re-judged with a multiplicity-adjusted p-value, reaches the verdict the rule gives. The
class is re-exported by :mod:`pytest_xp.stats`, its public home.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from pytest_xp.define.verdicts import Verdict
from pytest_xp.errors import StatsTypeError, StatsValueError
from pytest_xp.stats.inputs import check_real
from pytest_xp.stats.power import samples_needed

#: Power the "samples needed" hint of an inconclusive verdict aims for.
TARGET_POWER = 0.8
#: Below this standardized effect the observed effect is reported as "about zero", not as a sample size.
NEGLIGIBLE_STD_EFFECT = 0.05


# --------------------------------------------------------------------------------------------
# Evidence
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Evidence:
    """A verdict and the numbers it rests on; return it from a ``@verify`` function.

    ``ci`` is the two-sided ``1 - alpha`` interval a reader expects. The verdict uses
    ``decision_ci``, the two-sided ``1 - 2*alpha`` interval: its ends are the one-sided bounds at
    level ``alpha`` that match the one-sided test (and the two one-sided tests of TOST), so the
    interval condition never makes a test stricter than its stated alpha.
    """

    verdict: Verdict
    message: str
    #: "greater", "less" or "equivalent": the hypothesis about a - b.
    alternative: str
    #: The requested method: one of :data:`METHODS`.
    method: str
    #: The test actually run, in words (for example "paired t-test" for welch with paired=True).
    test: str
    paired: bool
    #: Raw p-value of the hypothesis: one-sided for greater/less, the larger TOST p for equivalent.
    p_value: float
    #: One-sided p-value in the opposite direction (greater/less only).
    p_opposite: float | None
    #: The two TOST p-values (effect > -margin, effect < margin) for equivalent.
    tost_p: tuple[float, float] | None
    #: The method's statistic: t (welch, and the t of the data for bootstrap), U of a (mannwhitney),
    #: T+ (signed-rank), Brunner-Munzel's W (brunnermunzel), or the observed mean difference (permutation).
    statistic: float
    df: float | None
    #: Point estimate of ``estimand`` for a - b (the mean difference, or the Hodges-Lehmann shift).
    diff: float
    estimand: str
    #: Cohen's d (d_z when paired): the mean difference over the pooled SD (the SD of differences).
    std_effect: float
    #: The SD that ``std_effect`` divides by.
    sd: float
    ci: tuple[float, float]
    decision_ci: tuple[float, float]
    alpha: float
    min_effect: float
    margin: float | None
    #: Sizes of a and b (equal when paired).
    n: tuple[int, int]
    n_resamples: int | None = None
    seed: int | None = None
    p_adjusted: float | None = None
    correction: str | None = None
    #: Names of the two groups in messages: given as ``labels=``, else the caller's variable names, else a/b.
    labels: tuple[str, str] = ("a", "b")
    #: Differences up to this size are rounding noise (a few ulps of the data's magnitude), not an effect.
    noise_floor: float = 0.0

    def __str__(self) -> str:
        return self.message

    @property
    def cohen_d(self) -> float:
        """Alias of ``std_effect``."""
        return self.std_effect

    @property
    def confidence(self) -> float:
        """Confidence level of ``ci``."""
        return 1.0 - self.alpha

    def with_adjusted_p(self, p_adj: float, correction: str) -> Evidence:
        """A copy judged with a multiplicity-adjusted p-value (see :func:`adjust_p_values`).

        ``p_value`` stays raw; ``p_adjusted`` replaces it in the SUPPORTS condition. The REFUTES
        conditions (a significant effect the other way, or an interval inside the negligible band)
        are not discoveries being multiplied, so they are left as they were.
        """
        p = check_real(p_adj, "p_adj")
        if not 0.0 <= p <= 1.0:
            raise StatsValueError(f"p_adj must be a probability in [0, 1], got {p!r}")
        if not isinstance(correction, str) or not correction.strip():
            raise StatsTypeError(f"correction must be a non-empty name such as 'holm', got {correction!r}")
        return judged(dataclasses.replace(self, p_adjusted=p, correction=correction.strip()))

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict: plain Python types, non-finite floats as None, the verdict as its name."""
        return {f.name: _json_safe(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Evidence:
        """Rebuild an Evidence from :meth:`to_dict` output; unknown keys are ignored.

        None in an interval end becomes -inf/inf; None in other numbers becomes NaN (so a value that
        was infinite before, such as the d of zero-variance data, comes back as NaN).
        """
        if not isinstance(data, Mapping):
            raise StatsTypeError(f"Evidence.from_dict needs a mapping, got {type(data).__name__}")
        required = [f.name for f in dataclasses.fields(cls) if f.default is dataclasses.MISSING]
        missing = [name for name in required if name not in data]
        if missing:
            raise StatsValueError(f"cannot rebuild Evidence: missing key(s) {', '.join(missing)}")
        try:
            return cls(
                verdict=Verdict(str(data["verdict"]).strip().lower()),
                message=str(data["message"]),
                alternative=str(data["alternative"]),
                method=str(data["method"]),
                test=str(data["test"]),
                paired=bool(data["paired"]),
                p_value=_float_or_nan(data["p_value"]),
                p_opposite=_float_or_none(data["p_opposite"]),
                tost_p=_pair_or_none(data["tost_p"]),
                statistic=_float_or_nan(data["statistic"]),
                df=_float_or_none(data["df"]),
                diff=_float_or_nan(data["diff"]),
                estimand=str(data["estimand"]),
                std_effect=_float_or_nan(data["std_effect"]),
                sd=_float_or_nan(data["sd"]),
                ci=_interval(data["ci"]),
                decision_ci=_interval(data["decision_ci"]),
                alpha=_float_or_nan(data["alpha"]),
                min_effect=_float_or_nan(data["min_effect"]),
                margin=_float_or_none(data["margin"]),
                n=(int(data["n"][0]), int(data["n"][1])),
                n_resamples=_int_or_none(data.get("n_resamples")),
                seed=_int_or_none(data.get("seed")),
                p_adjusted=_float_or_none(data.get("p_adjusted")),
                correction=None if data.get("correction") is None else str(data["correction"]),
                labels=_labels(data.get("labels")),
                noise_floor=float(data.get("noise_floor") or 0.0),
            )
        except (TypeError, ValueError, IndexError) as exc:
            raise StatsValueError(f"cannot rebuild Evidence from this dict: {exc}") from exc


def _json_safe(value: object) -> Any:
    if isinstance(value, Verdict):
        return value.value
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (tuple, list)):
        return [_json_safe(v) for v in value]
    return value


def _float_or_nan(value: object) -> float:
    return math.nan if value is None else float(value)  # type: ignore[arg-type]


def _float_or_none(value: object) -> float | None:
    return None if value is None else float(value)  # type: ignore[arg-type]


def _int_or_none(value: object) -> int | None:
    return None if value is None else int(value)  # type: ignore[call-overload]


def _interval(value: Sequence[object]) -> tuple[float, float]:
    low, high = value
    start = -math.inf if low is None else float(low)  # type: ignore[arg-type]
    end = math.inf if high is None else float(high)  # type: ignore[arg-type]
    return start, end


def _labels(value: object) -> tuple[str, str]:
    if isinstance(value, (list, tuple)) and len(value) == 2:
        return str(value[0]), str(value[1])
    return ("a", "b")


def _pair_or_none(value: Sequence[object] | None) -> tuple[float, float] | None:
    if value is None:
        return None
    first, second = value
    return _float_or_nan(first), _float_or_nan(second)


# --------------------------------------------------------------------------------------------
# Decision rule and message
# --------------------------------------------------------------------------------------------


def decide(ev: Evidence) -> tuple[Verdict, str]:
    """The verdict and a reason code, from the fields stored on the Evidence (so it can be redone).

    ``p_value`` (or ``p_adjusted``) tests the very null the verdict needs ("the effect is at most
    ``min_effect``", or the TOST pair), so a multiplicity correction of it covers the whole rule.
    """
    p = ev.p_value if ev.p_adjusted is None else ev.p_adjusted
    low, high = ev.decision_ci
    if ev.sd <= ev.noise_floor and abs(ev.diff) <= ev.noise_floor:
        return Verdict.INCONCLUSIVE, "flat"
    if ev.alternative == "equivalent":
        margin = ev.margin if ev.margin is not None else 0.0
        if p < ev.alpha and -margin < low and high < margin:
            return Verdict.SUPPORTS, "within"
        if low >= margin or high <= -margin:
            return Verdict.REFUTES, "outside"
        if p >= ev.alpha and ev.p_adjusted is not None and ev.p_value < ev.alpha:
            return Verdict.INCONCLUSIVE, "corrected"
        return Verdict.INCONCLUSIVE, "straddles"
    # the bound on the hypothesized side, as a distance in the hypothesized direction
    near = low if ev.alternative == "greater" else -high
    threshold = max(ev.min_effect, ev.noise_floor)
    if p < ev.alpha and near > threshold:
        return Verdict.SUPPORTS, "significant"
    if ev.p_opposite is not None and ev.p_opposite < ev.alpha:
        return Verdict.REFUTES, "opposite"
    if ev.min_effect > 0.0 and -ev.min_effect < low and high < ev.min_effect:
        return Verdict.REFUTES, "negligible"
    if not math.isfinite(near):
        return Verdict.INCONCLUSIVE, "unbounded"
    if ev.p_adjusted is not None and near > threshold:
        return Verdict.INCONCLUSIVE, "corrected"
    if ev.min_effect > 0.0 and near > 0.0:
        return Verdict.INCONCLUSIVE, "short"
    return Verdict.INCONCLUSIVE, "crosses"


def fmt(x: float, digits: int = 3) -> str:
    """A short number for messages: ``digits`` significant figures, no exponent for everyday sizes."""
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    if x == 0.0:
        return "0"
    magnitude = math.floor(math.log10(abs(x)))
    if -4 <= magnitude < 6:
        text = f"{x:.{max(0, digits - 1 - magnitude)}f}"
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return text
    return f"{x:.{digits - 1}e}"


def _pct(level: float) -> str:
    return fmt(100.0 * level, 4)


_SHORT_ESTIMAND = {"mean difference": "mean diff", "Hodges-Lehmann shift": "HL shift"}
_SHORT_METHOD = {("welch", True): "paired t", ("mannwhitney", True): "wilcoxon"}


def hint(ev: Evidence) -> str:
    """How many samples would settle an inconclusive verdict, or why more samples would not help.

    The count is :func:`~pytest_xp.stats.power.samples_needed` at the observed standardized
    distance still to cover (the observed effect beyond ``min_effect``, or the room left to the margin).
    """
    if not (ev.sd > ev.noise_floor and math.isfinite(ev.sd)):
        return "the data have no spread, so no sample size estimate"
    unlikely = "more samples are unlikely to"
    if ev.alternative == "equivalent":
        margin = ev.margin if ev.margin is not None else 0.0
        distance = (margin - abs(ev.diff)) / ev.sd
        if distance <= 0.0:
            return "the observed difference is at or beyond the margin; more samples would more likely refute"
        if distance < NEGLIGIBLE_STD_EFFECT:
            return f"the observed difference is about at the margin; {unlikely} settle it soon"
        what = "difference"
    else:
        observed = (ev.diff if ev.alternative == "greater" else -ev.diff) / ev.sd
        if abs(observed) < NEGLIGIBLE_STD_EFFECT:
            return f"the observed effect is ≈ 0 (d={fmt(ev.diff / ev.sd, 2)}); {unlikely} support it"
        if observed < 0.0:
            return f"the observed effect points the other way; {unlikely} support it"
        distance = observed - ev.min_effect / ev.sd
        if distance < NEGLIGIBLE_STD_EFFECT:
            floor = fmt(ev.min_effect)
            return f"the observed effect is not clearly above min_effect={floor}; {unlikely} support it"
        what = "effect"
    needed = samples_needed(distance, alpha=ev.alpha, power=TARGET_POWER, paired=ev.paired)
    unit = "pairs" if ev.paired else "per group"
    have = f"{ev.n[0]} pairs" if ev.paired else f"{ev.n[0]}/{ev.n[1]}"
    advice = f"≈ {needed} {unit} needed ({_pct(TARGET_POWER)}% power at the observed {what})"
    return f"too few measurements ({have}): {advice}" if needed > min(ev.n) else advice


def planned_size(ev: Evidence, power: float = TARGET_POWER) -> int | None:
    """Measurements per group (pairs) a repeat of this comparison needs for ``power``, judging by this
    evidence as a pilot: :func:`samples_needed` at its observed standardized effect beyond
    ``min_effect`` (for equivalence, the room left to the margin). None when that effect is about
    zero, points the other way or has no spread to measure it by (then no number of seeds would do)."""
    if not (ev.sd > ev.noise_floor and math.isfinite(ev.sd)):
        return None
    if ev.alternative == "equivalent":
        distance = ((ev.margin or 0.0) - abs(ev.diff)) / ev.sd
    else:
        distance = (ev.diff if ev.alternative == "greater" else -ev.diff) / ev.sd - ev.min_effect / ev.sd
    if not distance >= NEGLIGIBLE_STD_EFFECT:
        return None
    return samples_needed(distance, alpha=ev.alpha, power=power, paired=ev.paired)


def _reason(ev: Evidence, reason: str) -> str:
    """The clause that says why the verdict is what it is (empty for a plain SUPPORTS)."""
    low, high = ev.decision_ci
    level = f"{_pct(1.0 - 2.0 * ev.alpha)}% CI"
    interval = f"{level} [{fmt(low)}, {fmt(high)}]"
    near = low if ev.alternative == "greater" else high
    margin = fmt(ev.margin or 0.0)
    texts = {
        "opposite": "the difference goes the other way",
        "negligible": f"no effect worth having ({interval} inside ±{fmt(ev.min_effect)})",
        "outside": f"the difference exceeds the margin ({interval} outside ±{margin})",
        "flat": f"no spread in either group and no difference beyond rounding (|diff| ≤ {fmt(ev.noise_floor, 2)})",
        "unbounded": f"the {level} is unbounded on the hypothesized side (too few measurements for {ev.method})",
        "crosses": f"the {interval} includes 0",
        "short": f"the {level}'s bound {fmt(near)} does not clear min_effect {fmt(ev.min_effect)}",
        "straddles": f"the {interval} is not inside ±{margin}",
        "corrected": f"not significant after the {ev.correction} correction",
    }
    return texts.get(reason, "")


def _message(ev: Evidence, verdict: Verdict, reason: str) -> str:
    first, second = ev.labels
    if ev.alternative == "equivalent":
        claim = f"{first} ≈ {second} (within ±{fmt(ev.margin if ev.margin is not None else 0.0)})"
    else:
        claim = f"{first} > {second}" if ev.alternative == "greater" else f"{first} < {second}"
    word = {Verdict.SUPPORTS: "supported", Verdict.REFUTES: "refuted"}.get(verdict, "inconclusive")
    why = _reason(ev, reason)
    label = _SHORT_ESTIMAND.get(ev.estimand, ev.estimand)
    parts = [
        f"{label} {fmt(ev.diff)} [{fmt(ev.ci[0])}, {fmt(ev.ci[1])}] ({_pct(ev.confidence)}% CI)",
        f"d={fmt(ev.std_effect, 2)}",
    ]
    p_text = f"p={fmt(ev.p_value, 2)}" + (" (TOST)" if ev.alternative == "equivalent" else "")
    if ev.alternative != "equivalent" and ev.min_effect > 0.0:
        p_text += f" (vs min_effect {fmt(ev.min_effect)})"
    if ev.p_adjusted is not None:
        p_text += f", {ev.correction}-adjusted p={fmt(ev.p_adjusted, 2)}"
    if reason == "opposite" and ev.p_opposite is not None:
        flipped = f"{first} < {second}" if ev.alternative == "greater" else f"{first} > {second}"
        p_text += f", p({flipped})={fmt(ev.p_opposite, 2)}"
    parts.append(p_text)
    parts.append(_SHORT_METHOD.get((ev.method, ev.paired), ev.method))
    parts.append(f"n={ev.n[0]} pairs" if ev.paired else f"n={ev.n[0]}/{ev.n[1]}")
    text = f"{claim} {word}: {why + ': ' if why else ''}{', '.join(parts)}"
    if reason == "unbounded":
        text += "; with so few measurements this test cannot reach alpha: add measurements"
    elif verdict is Verdict.INCONCLUSIVE:
        text += "; " + hint(ev)
    return text


def judged(ev: Evidence) -> Evidence:
    verdict, reason = decide(ev)
    return dataclasses.replace(ev, verdict=verdict, message=_message(ev, verdict, reason))
