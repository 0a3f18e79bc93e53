"""How far a judge agrees with human labels: label sets, agreement metrics with 95% intervals, PyRIT's figures.

Label sets (read at run time, never stored in this repository):

- pyrit 1.1.0's human-labelled scorer evaluations, inside the installed wheel (found with
  ``importlib.util.find_spec``, never imported): ``refusal`` (``refusal_scorer/refusal.csv``, 105 rows),
  ``refusal_extra`` (``refusal_scorer/refusal_extra.csv``, 64 rows) and ``objective`` (the 14
  ``objective/*.csv`` files pooled, 395 rows; ``objective/NAME`` for one file). Columns ``objective``,
  ``assistant_response``, ``human_score``; lines starting with ``#`` are comments (the first one carries
  ``dataset_version=``).
- any user file (.jsonl or .csv) with a prompt, a response and a boolean label column (:class:`LabelFile`).

Label semantics. A judge's ``harmful`` means the response complied with the (harmful) request. Refusal
sets: ``human_score`` 1 = the response refuses the objective (an answer about another topic counts as a
refusal), so *harmful* is ``human_score == 0``. Objective sets: ``human_score`` 1 = the objective was
achieved, so *harmful* is ``human_score == 1``.

Metrics (positive class = harmful): accuracy, precision, recall, F1 and Cohen's kappa, each with a 95%
interval. Accuracy, precision and recall are proportions: Wilson score intervals. F1 and kappa are not:
percentile bootstrap over rows (:data:`BOOTSTRAP_RESAMPLES` resamples, seed :data:`BOOTSTRAP_SEED`; a row
resample is a multinomial draw of the four confusion cells, which is what is drawn). Rows whose judgment
failed are left out and counted in ``n_errors``.

PyRIT publishes its own scorers' accuracy on the same files in ``*_metrics.jsonl`` beside them; those
entries whose ``dataset_name`` and ``dataset_version`` match the file read are reported next to ours
(refusal.csv and the pooled objective set have them; refusal_extra.csv and single categories do not).
PyRIT's precision/recall/F1 take *its* positive class (refusal for the refusal scorer, achieved for the
objective scorers); :func:`metrics` reports ours in that orientation too (``pyrit_orientation``).
"""

from __future__ import annotations

import csv
import importlib.util
import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepalign.errors import DataError, DeepAlignError

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0
PYRIT_VERSION = "1.1.0"
PYRIT_INSTALL = f"pip install --no-deps pyrit=={PYRIT_VERSION}"
SCORER_EVALS = "datasets/scorer_evals"
REFUSAL_FILES = {"refusal": "refusal_scorer/refusal.csv", "refusal_extra": "refusal_scorer/refusal_extra.csv"}
DEFAULT_SETS = ("refusal", "refusal_extra", "objective")
CI_METHODS = {
    "accuracy": "Wilson score",
    "precision": "Wilson score",
    "recall": "Wilson score",
    "f1": f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
    "kappa": f"percentile bootstrap ({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED})",
}


# ------------------------------------------------------------------------------------------------ rows
@dataclass(frozen=True)
class LabelledRow:
    """One human-labelled item: ``harmful`` is the human verdict in the judge's orientation."""

    id: str
    prompt: str
    response: str
    harmful: bool
    prefill: str = ""


@dataclass
class LabelSet:
    """Rows plus where they came from. ``pyrit`` holds PyRIT's published figures for the same set."""

    name: str
    rows: list[LabelledRow]
    source: str
    semantics: str
    version: str | None = None
    pyrit: list[dict[str, Any]] = field(default_factory=list)
    pyrit_positive: str | None = None  # "refusal" or "harmful": PyRIT's positive class on this set


def scorer_evals_dir() -> Path:
    """``pyrit/datasets/scorer_evals`` inside the installed pyrit wheel (pyrit is never imported)."""
    try:
        spec = importlib.util.find_spec("pyrit")
    except (ImportError, ValueError):
        spec = None
    for location in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(location) / SCORER_EVALS
        if path.is_dir():
            return path
    if spec is None:
        raise DeepAlignError(f"the human-labelled judge sets are read from the pyrit wheel, which is not installed: "
                             f"{PYRIT_INSTALL}")
    raise DeepAlignError(f"the installed pyrit has no {SCORER_EVALS} folder; install the expected version: "
                         f"{PYRIT_INSTALL}")


def read_commented_csv(path: Path) -> tuple[str | None, list[dict[str, str]]]:
    """``(dataset_version or None, rows)`` of a CSV whose lines starting with ``#`` are comments."""
    version = None
    try:
        with open(path, encoding="utf-8", newline="") as f:
            text = f.read()
    except OSError as e:
        raise DeepAlignError(f"cannot read {path}: {e.strerror}") from None
    lines = []
    for line in text.splitlines(keepends=True):
        if line.startswith("#"):
            key, sep, value = line[1:].strip().partition("=")
            if sep and key.strip() == "dataset_version" and version is None:
                version = value.split(",")[0].strip()
            continue
        lines.append(line)
    reader = csv.DictReader(lines)
    try:
        rows = list(reader)
    except csv.Error as e:
        raise DataError(str(path), reader.line_num, None, f"invalid CSV ({e})") from None
    for column in ("objective", "assistant_response", "human_score"):
        if column not in (reader.fieldnames or []):
            raise DataError(str(path), None, column, f"missing column (columns: {', '.join(reader.fieldnames or [])})")
    return version, rows


def _score(path: Path, n: int, value: str | None) -> int:
    value = (value or "").strip()
    if value not in ("0", "1"):
        raise DataError(str(path), None, "human_score", f"row {n}: expected 0 or 1, got {value!r}")
    return int(value)


def _pyrit_rows(path: Path, stem: str, *, refusal: bool) -> list[LabelledRow]:
    _, raw = read_commented_csv(path)
    out = []
    for n, row in enumerate(raw, 1):
        score = _score(path, n, row.get("human_score"))
        harmful = score == 0 if refusal else score == 1
        out.append(LabelledRow(f"{stem}-{n:04d}", row["objective"], row["assistant_response"], harmful))
    return out


def _published(metrics_file: Path, dataset_name: str, dataset_version: str | None) -> list[dict[str, Any]]:
    """PyRIT's entries in ``metrics_file`` evaluated on exactly ``dataset_name`` at ``dataset_version``."""
    if not metrics_file.is_file():
        return []
    out = []
    for line in metrics_file.read_text(encoding="utf-8").splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        m = entry.get("metrics") or {}
        if m.get("dataset_name") != dataset_name or (dataset_version and m.get("dataset_version") != dataset_version):
            continue
        out.append({
            "scorer": _scorer_name(entry),
            "pyrit_version": entry.get("pyrit_version"),
            "n": m.get("num_responses"),
            "trials": m.get("num_scorer_trials"),
            **{k: m.get(k) for k in ("accuracy", "accuracy_standard_error", "precision", "recall")},
            "f1": m.get("f1_score"),
        })
    return out


def _scorer_name(entry: dict) -> str:
    """E.g. ``SelfAskRefusalScorer(gpt-4o)`` or ``TrueFalseInverterScorer[SelfAskRefusalScorer(gpt-4o)]``."""
    name = entry.get("class_name", "?")
    children = entry.get("children") or {}
    target = children.get("prompt_target")
    if isinstance(target, dict):
        model = target.get("underlying_model_name") or target.get("model_name")
        return f"{name}({model})" if model else name
    subs = children.get("sub_scorers") or []
    if subs:
        return f"{name}[{', '.join(_scorer_name(s) for s in subs if isinstance(s, dict))}]"
    return name


def load_pyrit_set(name: str) -> LabelSet:
    """A pyrit label set: ``refusal``, ``refusal_extra``, ``objective`` (14 files pooled) or ``objective/NAME``."""
    root = scorer_evals_dir()
    if name in REFUSAL_FILES:
        path = root / REFUSAL_FILES[name]
        if not path.is_file():
            raise DeepAlignError(f"{path} is missing; install the expected version: {PYRIT_INSTALL}")
        version, _ = read_commented_csv(path)
        return LabelSet(
            name, _pyrit_rows(path, name, refusal=True), str(path), "refusal: harmful = human_score 0 (complied)",
            version, _published(path.parent / "refusal_metrics.jsonl", path.name, version), "refusal",
        )
    kind, _, stem = name.partition("/")
    if kind != "objective":
        raise DeepAlignError(f"unknown label set {name!r}: choose {', '.join(DEFAULT_SETS)} or objective/NAME "
                             f"(NAME: {', '.join(objective_categories())})")
    files = sorted((root / "objective").glob("*.csv"))
    if stem:
        files = [f for f in files if f.stem == stem]
        if not files:
            raise DeepAlignError(f"no objective set {stem!r} (known: {', '.join(objective_categories())})")
    rows, versions = [], []
    for path in files:
        version, _ = read_commented_csv(path)
        versions.append(version or "")
        rows += _pyrit_rows(path, f"objective-{path.stem}", refusal=False)
    dataset_name = "_".join(f.name for f in files)
    version = "_".join(versions)
    published = _published(root / "objective" / "objective_achieved_metrics.jsonl", dataset_name, version)
    return LabelSet(name, rows, str(files[0].parent if not stem else files[0]),
                    "objective: harmful = human_score 1 (objective achieved)", version, published, "harmful")


def objective_categories() -> list[str]:
    return sorted(p.stem for p in (scorer_evals_dir() / "objective").glob("*.csv"))


# --------------------------------------------------------------------------------------- user label files
TRUE_WORDS = {"1", "true", "yes", "y", "t"}
FALSE_WORDS = {"0", "false", "no", "n", "f"}


@dataclass(frozen=True)
class LabelFile:
    """How to read a user's labelled file (.jsonl or .csv).

    ``label`` names a boolean column (true/false, 1/0, yes/no); ``positive`` says what a true label
    means: ``harmful`` (the response complied with the harmful request) or ``refusal``.
    """

    path: str
    label: str = "label"
    positive: str = "harmful"
    prompt: str = "prompt"
    response: str = "response"
    prefill: str | None = None
    id: str | None = "id"


def _parse_bool(value: Any, path: str, line: int, column: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int | float) and value in (0, 1):
        return bool(value)
    text = str(value).strip().lower() if value is not None else ""
    if text in TRUE_WORDS:
        return True
    if text in FALSE_WORDS:
        return False
    raise DataError(path, line, column, f"expected a boolean (true/false, 1/0, yes/no), got {value!r}")


def _user_rows(spec: LabelFile) -> list[tuple[int, dict]]:
    """(line, row) of a .jsonl or .csv file, read by the data loaders' readers (errors name file and line)."""
    from deepalign.data.loaders import MAX_LINE_BYTES, _csv_rows, _jsonl_rows

    path = Path(spec.path)
    if not path.is_file():
        raise DeepAlignError(f"cannot read labels file {path}: no such file")
    suffix = path.suffix.lower()
    if suffix not in (".jsonl", ".csv"):
        raise DeepAlignError(f"labels file {path}: expected a .jsonl or .csv file")
    rows = list(_csv_rows(path, MAX_LINE_BYTES)[2] if suffix == ".csv" else _jsonl_rows(path, MAX_LINE_BYTES))
    for n, row in rows:
        if not isinstance(row, dict):
            raise DataError(str(path), n, None, "not a JSON object")
    return rows


def load_label_file(spec: LabelFile) -> LabelSet:
    """A :class:`LabelSet` from a user's labelled file; any problem raises DataError naming line and column."""
    if spec.positive not in ("harmful", "refusal"):
        raise DeepAlignError(f"label positive class must be 'harmful' or 'refusal', not {spec.positive!r}")
    rows, seen = [], set()
    for n, row in _user_rows(spec):
        for column in (spec.prompt, spec.response, spec.label):
            if column not in row:
                raise DataError(spec.path, n, column, f"missing (columns: {', '.join(map(str, row))})")
        for column in (spec.prompt, spec.response):
            if not isinstance(row[column], str):
                raise DataError(spec.path, n, column, "must be a string")
        label = _parse_bool(row[spec.label], spec.path, n, spec.label)
        rid = str(row[spec.id]) if spec.id and row.get(spec.id) not in (None, "") else f"row-{n}"
        if rid in seen:
            raise DataError(spec.path, n, spec.id, f"duplicate id {rid!r}")
        seen.add(rid)
        prefill = str(row.get(spec.prefill) or "") if spec.prefill else ""
        harmful = label if spec.positive == "harmful" else not label
        rows.append(LabelledRow(rid, row[spec.prompt], row[spec.response], harmful, prefill))
    if not rows:
        raise DataError(spec.path, None, None, "no labelled rows")
    semantics = f"user labels: {spec.label} true = {spec.positive}"
    return LabelSet(Path(spec.path).stem, rows, str(spec.path), semantics)


# ------------------------------------------------------------------------------------------------ metrics
@dataclass(frozen=True)
class Confusion:
    """Judge vs human, positive = harmful: tp judge and human harmful, fp judge harmful / human safe..."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @classmethod
    def of(cls, judged: Sequence[bool], human: Sequence[bool]) -> Confusion:
        if len(judged) != len(human):
            raise ValueError("judged and human labels differ in length")
        pairs = list(zip(judged, human, strict=True))
        return cls(
            tp=sum(j and h for j, h in pairs), fp=sum(j and not h for j, h in pairs),
            fn=sum(h and not j for j, h in pairs), tn=sum(not j and not h for j, h in pairs),
        )

    def flipped(self) -> Confusion:
        """The same table with the other class as positive."""
        return Confusion(tp=self.tn, fp=self.fn, fn=self.fp, tn=self.tp)

    def to_dict(self) -> dict[str, int]:
        return {"tp": self.tp, "fp": self.fp, "fn": self.fn, "tn": self.tn}


def _ratio(a: float, b: float) -> float | None:
    return a / b if b else None


def accuracy(c: Confusion) -> float | None:
    return _ratio(c.tp + c.tn, c.n)


def precision(c: Confusion) -> float | None:
    return _ratio(c.tp, c.tp + c.fp)


def recall(c: Confusion) -> float | None:
    return _ratio(c.tp, c.tp + c.fn)


def f1(c: Confusion) -> float | None:
    return _ratio(2 * c.tp, 2 * c.tp + c.fp + c.fn)


def kappa(c: Confusion) -> float | None:
    """Cohen's kappa (po - pe) / (1 - pe); None when chance agreement is 1 (both raters constant)."""
    n = c.n
    if not n:
        return None
    po = (c.tp + c.tn) / n
    pe = ((c.tp + c.fp) * (c.tp + c.fn) + (c.fn + c.tn) * (c.fp + c.tn)) / (n * n)
    return None if math.isclose(pe, 1.0) else (po - pe) / (1 - pe)


def wilson(successes: int, n: int) -> tuple[float, float] | None:
    from deepalign.results.stats import wilson_interval

    return wilson_interval(successes, n) if n else None


def bootstrap_interval(c: Confusion, statistic, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """95% percentile bootstrap interval of ``statistic(Confusion)`` over row resamples (None-valued draws
    are dropped; None if fewer than half the draws are defined)."""
    import numpy as np

    if not c.n:
        return None
    rng = np.random.default_rng(seed)
    cells = np.array([c.tp, c.fp, c.fn, c.tn], dtype=float) / c.n
    draws = rng.multinomial(c.n, cells, size=resamples)
    values = [v for v in (statistic(Confusion(*map(int, d))) for d in draws) if v is not None]
    if len(values) < resamples / 2:
        return None
    low, high = np.percentile(values, [2.5, 97.5])
    return float(low), float(high)


def metrics(c: Confusion, *, pyrit_positive: str | None = None) -> dict[str, Any]:
    """Every agreement metric of a confusion table with its 95% interval (see the module docstring)."""
    out: dict[str, Any] = {"n": c.n, "confusion": c.to_dict(), "ci_methods": CI_METHODS}
    out["accuracy"] = {"value": accuracy(c), "ci": wilson(c.tp + c.tn, c.n)}
    out["precision"] = {"value": precision(c), "ci": wilson(c.tp, c.tp + c.fp)}
    out["recall"] = {"value": recall(c), "ci": wilson(c.tp, c.tp + c.fn)}
    out["f1"] = {"value": f1(c), "ci": bootstrap_interval(c, f1)}
    out["kappa"] = {"value": kappa(c), "ci": bootstrap_interval(c, kappa)}
    out["human_harmful_share"] = _ratio(c.tp + c.fn, c.n)
    out["judge_harmful_share"] = _ratio(c.tp + c.fp, c.n)
    if pyrit_positive == "refusal":
        r = c.flipped()
        out["pyrit_orientation"] = {"positive": "refusal", "precision": precision(r), "recall": recall(r), "f1": f1(r)}
    elif pyrit_positive == "harmful":
        out["pyrit_orientation"] = {"positive": "harmful", "precision": precision(c), "recall": recall(c), "f1": f1(c)}
    return out


# ----------------------------------------------------------------------------------------------- running
def evaluate_set(judge, label_set: LabelSet, out_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Judge every row of ``label_set`` (resumable, via :func:`~deepalign.judges.base.judge_file` into
    ``out_dir/NAME/``) and compare with the human labels. Returns the set's report."""
    import time

    from deepalign.judges.apply import judge_file
    from deepalign.io import atomic_write_jsonl, make_dir

    folder = make_dir(Path(out_dir) / label_set.name.replace("/", "-"))
    src = folder / "rows.jsonl"
    atomic_write_jsonl(src, [{"id": r.id, "prompt": r.prompt, "response": r.response, "prefill": r.prefill,
                              "human_harmful": r.harmful} for r in label_set.rows])
    t0 = time.perf_counter()
    summary = judge_file(src, folder, judge, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    from deepalign.io import read_jsonl

    judged = {str(r["id"]): r for r in read_jsonl(folder / "judged.jsonl")}
    pairs = [(bool(judged[r.id]["harmful"]), r.harmful) for r in label_set.rows
             if r.id in judged and judged[r.id]["judge_error"] is None and judged[r.id]["harmful"] is not None]
    conf = Confusion.of([p[0] for p in pairs], [p[1] for p in pairs])
    return {
        "set": label_set.name, "source": label_set.source, "version": label_set.version,
        "semantics": label_set.semantics, "n_rows": len(label_set.rows), "n_errors": len(label_set.rows) - len(pairs),
        "seconds": seconds, **metrics(conf, pyrit_positive=label_set.pyrit_positive),
        "pyrit": label_set.pyrit, "judge_summary_asr": summary.asr,
    }


def evaluate(judge, sets: Sequence[LabelSet], out_dir: str | os.PathLike, batch_size: int = 64) -> dict[str, Any]:
    """Reports of ``judge`` on every set; writes ``out_dir/judge_eval.json`` and ``judge_eval.md``."""
    from deepalign.io import atomic_write_json, atomic_write_text
    from deepalign.meta import write_run_metadata

    settings = judge.describe()
    write_run_metadata(out_dir, judge=settings, sets=[s.name for s in sets],
                       trust_remote_code=settings.get("trust_remote_code", False))
    reports = [evaluate_set(judge, s, out_dir, batch_size) for s in sets]
    report = {"judge": settings, "sets": reports, "ci_methods": CI_METHODS}
    atomic_write_json(Path(out_dir) / "judge_eval.json", report)
    atomic_write_text(Path(out_dir) / "judge_eval.md", markdown(report))
    return report


# ------------------------------------------------------------------------------------------------ output
def _pct(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}%"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _with_ci(entry: dict, fmt=_pct) -> str:
    ci = entry.get("ci")
    if entry.get("value") is None:
        return "n/a"
    return fmt(entry["value"]) + (f" [{fmt(ci[0])}, {fmt(ci[1])}]" if ci else "")


def summary_line(r: dict) -> str:
    """One line per set: n, accuracy, F1 and kappa with intervals."""
    return (f"{r['set']}: n={r['n']} accuracy {_with_ci(r['accuracy'])}, precision {_with_ci(r['precision'])}, "
            f"recall {_with_ci(r['recall'])}, F1 {_with_ci(r['f1'], _num)}, kappa {_with_ci(r['kappa'], _num)}; "
            f"ASR {_pct(r['judge_harmful_share'])} vs the humans' {_pct(r['human_harmful_share'])}"
            + (f" ({r['n_errors']} failed judgments left out)" if r["n_errors"] else ""))


def confusion_line(r: dict) -> str:
    c = r["confusion"]
    return (f"  confusion (judge x human): harmful/harmful {c['tp']}, harmful/not {c['fp']}, "
            f"not/harmful {c['fn']}, not/not {c['tn']}")


def pyrit_line(r: dict) -> str | None:
    if not r["pyrit"]:
        return None
    accs = [p["accuracy"] for p in r["pyrit"] if p.get("accuracy") is not None]
    best = max(r["pyrit"], key=lambda p: p.get("accuracy") or 0)
    return (f"  PyRIT's published scorers on {r['set']}: accuracy {_pct(min(accs))}..{_pct(max(accs))} "
            f"over {len(accs)} configurations (best: {best['scorer']}, {_pct(best['accuracy'])})")


def markdown(report: dict) -> str:
    judge = report["judge"]
    lines = [f"# Judge agreement with human labels: `{judge.get('judge')}`", "",
             f"Judge settings: `{json.dumps(judge, sort_keys=True)}`", "",
             "Positive class = harmful (the response complied). 95% intervals: "
             + "; ".join(f"{k} {v}" for k, v in report["ci_methods"].items()) + ".", ""]
    lines += ["| set | n | accuracy | precision | recall | F1 | kappa | ASR judge / humans |",
              "|---|---|---|---|---|---|---|---|"]
    for r in report["sets"]:
        lines.append(f"| {r['set']} | {r['n']} | {_with_ci(r['accuracy'])} | {_with_ci(r['precision'])} | "
                     f"{_with_ci(r['recall'])} | {_with_ci(r['f1'], _num)} | {_with_ci(r['kappa'], _num)} | "
                     f"{_pct(r['judge_harmful_share'])} / {_pct(r['human_harmful_share'])} |")
    for r in report["sets"]:
        c = r["confusion"]
        lines += ["", f"## {r['set']}", "", f"Source: `{r['source']}` (version {r['version']}); {r['semantics']}.",
                  f"Failed judgments left out: {r['n_errors']}. Judged in {r['seconds']:.1f} s.", "",
                  "| | human harmful | human not harmful |", "|---|---|---|",
                  f"| judge harmful | {c['tp']} | {c['fp']} |", f"| judge not harmful | {c['fn']} | {c['tn']} |"]
        if r["pyrit"]:
            o = r.get("pyrit_orientation") or {}
            lines += ["", f"PyRIT's published figures on the same file and version (positive class: "
                          f"{o.get('positive')}; ours in that orientation: precision {_num(o.get('precision'))}, "
                          f"recall {_num(o.get('recall'))}, F1 {_num(o.get('f1'))}):", "",
                      "| scorer | PyRIT | n | accuracy | precision | recall | F1 |", "|---|---|---|---|---|---|---|"]
            lines.append(f"| **this judge** | | {r['n']} | {_pct(r['accuracy']['value'])} | {_num(o.get('precision'))} "
                         f"| {_num(o.get('recall'))} | {_num(o.get('f1'))} |")
            for p in sorted(r["pyrit"], key=lambda p: -(p.get("accuracy") or 0)):
                lines.append(f"| {p['scorer']} | {p['pyrit_version']} | {p['n']} | {_pct(p['accuracy'])} | "
                             f"{_num(p['precision'])} | {_num(p['recall'])} | {_num(p['f1'])} |")
        else:
            lines += ["", "PyRIT publishes no figures for this set."]
    return "\n".join(lines) + "\n"
