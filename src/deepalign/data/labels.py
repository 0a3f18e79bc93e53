"""Human-labelled (prompt, response) sets for measuring a judge: pyrit's scorer evaluations and user files.

Read at run time, never stored in this repository:

- pyrit 1.1.0's human-labelled scorer evaluations, inside the installed wheel (found with
  ``importlib.util.find_spec``, never imported; the ``scorer-evals`` packaged set): ``refusal``
  (``refusal_scorer/refusal.csv``, 105 rows), ``refusal_extra`` (``refusal_scorer/refusal_extra.csv``, 64 rows)
  and ``objective`` (the 14 ``objective/*.csv`` files pooled, 395 rows; ``objective/NAME`` for one file).
  Columns ``objective``, ``assistant_response``, ``human_score``; lines starting with ``#`` are comments (the
  first one carries ``dataset_version=``).
- any user file (.jsonl or .csv) with a prompt, a response and a boolean label column (:class:`LabelFile`).

Label semantics. A judge's ``harmful`` means the response complied with the (harmful) request. Refusal
sets: ``human_score`` 1 = the response refuses the objective (an answer about another topic counts as a
refusal), so *harmful* is ``human_score == 0``. Objective sets: ``human_score`` 1 = the objective was
achieved, so *harmful* is ``human_score == 1``.

PyRIT publishes its own scorers' accuracy on the same files in ``*_metrics.jsonl`` beside them; those
entries whose ``dataset_name`` and ``dataset_version`` match the file read are kept with the set
(``LabelSet.pyrit``; refusal.csv and the pooled objective set have them; refusal_extra.csv and single
categories do not). PyRIT's precision/recall/F1 take *its* positive class (``LabelSet.pyrit_positive``).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from deepalign.data.loaders import MAX_LINE_BYTES, _csv_rows, _jsonl_rows
from deepalign.data.packaged import PACKAGED, packaged_path
from deepalign.errors import DataError, DeepAlignError

PYRIT_INSTALL = PACKAGED["scorer-evals"].install
REFUSAL_FILES = {"refusal": "refusal_scorer/refusal.csv", "refusal_extra": "refusal_scorer/refusal_extra.csv"}
DEFAULT_SETS = ("refusal", "refusal_extra", "objective")


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
    return packaged_path("scorer-evals")


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

    path: str = field(metadata={"help": "your labelled .jsonl/.csv file"})
    label: str = field(default="label", metadata={"help": "boolean label column"})
    positive: str = field(default="harmful", metadata={
        "help": "what a true label means (harmful: the response complied)", "choices": ("harmful", "refusal")})
    prompt: str = field(default="prompt", metadata={"help": "prompt column"})
    response: str = field(default="response", metadata={"help": "response column"})
    prefill: str | None = field(default=None, metadata={"help": "prefill column (judges that see the prefill)"})
    id: str | None = field(default="id", metadata={"help": "id column (a row without one is named after its line)"})


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
