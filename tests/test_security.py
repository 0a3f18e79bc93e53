"""Security: weights load from safetensors only (never a pickle), trust_remote_code is off by default and
recorded in run metadata, and nothing runs a shell on user input. Source checks parse every module of
the package and the benchmarks with ``ast``; behaviour checks run the real loaders and commands."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

import deepalign
from deepalign.cli import build_parser, main
from deepalign.errors import DeepAlignError

ROOT = Path(deepalign.__file__).parent
SOURCES = sorted([*ROOT.rglob("*.py"), *(ROOT.parents[1] / "bench").glob("*.py")])
PICKLE_MODULES = {"pickle", "cPickle", "_pickle", "dill", "joblib", "cloudpickle", "shelve", "marshal"}


Trees = list[tuple[str, ast.AST]]


def parsed() -> Trees:
    return [(path.name, ast.parse(path.read_text(encoding="utf-8"), str(path))) for path in SOURCES]


def dotted(node: ast.AST) -> str:
    """'torch.load' for the call target ``torch.load``; '' for anything not a plain dotted name."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        head = dotted(node.value)
        return f"{head}.{node.attr}" if head else ""
    return ""


def keyword(call: ast.Call, name: str) -> ast.AST | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def is_const(node: ast.AST | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


def nodes(trees: Trees, kind) -> list[tuple[str, ast.AST]]:
    return [(f"{name}:{node.lineno}", node) for name, tree in trees for node in ast.walk(tree)
            if isinstance(node, kind)]


def torch_load_without_weights_only(trees: Trees) -> list[str]:
    return [where for where, call in nodes(trees, ast.Call) if dotted(call.func) == "torch.load"
            and not is_const(keyword(call, "weights_only"), True)]


def pickle_use(trees: Trees) -> list[str]:
    bad = [where for where, node in nodes(trees, ast.Import)
           if any(a.name.split(".")[0] in PICKLE_MODULES for a in node.names)]
    bad += [where for where, node in nodes(trees, ast.ImportFrom)
            if (node.module or "").split(".")[0] in PICKLE_MODULES]
    for where, call in nodes(trees, ast.Call):
        name = dotted(call.func)
        if name.endswith(("read_pickle", "to_pickle")) or is_const(keyword(call, "allow_pickle"), True):
            bad.append(where)
    return bad


def pickled_weights_allowed(trees: Trees) -> list[str]:
    return [where for where, call in nodes(trees, ast.Call) if dotted(call.func).endswith("from_pretrained")
            and is_const(keyword(call, "use_safetensors"), False)]


def shell_use(trees: Trees) -> list[str]:
    bad = []
    for where, call in nodes(trees, ast.Call):
        shell = keyword(call, "shell")
        if (shell is not None and not is_const(shell, False)) or dotted(call.func) in (
                "os.system", "os.popen", "subprocess.getoutput", "subprocess.getstatusoutput", "eval", "exec"):
            bad.append(where)
    return bad


def remote_code_not_off(trees: Trees) -> list[str]:
    """Parameters and dataclass fields named trust_remote_code whose default is not False, and literal
    ``trust_remote_code=True`` arguments."""
    bad = []
    for where, fn in nodes(trees, ast.FunctionDef | ast.AsyncFunctionDef):
        a = fn.args
        with_defaults = list(zip(a.args[len(a.args) - len(a.defaults):], a.defaults, strict=True)) + list(
            zip(a.kwonlyargs, a.kw_defaults, strict=True))
        bad += [where for arg, default in with_defaults
                if arg.arg == "trust_remote_code" and not is_const(default, False)]
        bad += [where for arg in a.args[: len(a.args) - len(a.defaults)] if arg.arg == "trust_remote_code"]
    for where, node in nodes(trees, ast.AnnAssign):
        if getattr(node.target, "id", None) == "trust_remote_code":
            value = keyword(node.value, "default") if isinstance(node.value, ast.Call) else node.value
            bad += [] if is_const(value, False) else [where]
    bad += [where for where, call in nodes(trees, ast.Call) if is_const(keyword(call, "trust_remote_code"), True)]
    return bad


CHECKS = [  # (checker, a snippet, how many findings it must report there)
    (torch_load_without_weights_only,
     "sd = torch.load(path)\nsd = torch.load(p, weights_only=False)\nsd = torch.load(p, weights_only=True)", 2),
    (pickle_use, "import pickle\nfrom joblib import load\nx = numpy.load(p, allow_pickle=True)", 3),
    (pickled_weights_allowed, "m = AutoModel.from_pretrained(p, use_safetensors=False)", 1),
    (shell_use, "subprocess.run(cmd, shell=True)\nos.system(cmd)\neval(text)\nsubprocess.run(argv)", 3),
    (remote_code_not_off, "def load(p, trust_remote_code=None): pass\n"
                          "class C:\n    trust_remote_code: bool = field(default=True)\n"
                          "f(trust_remote_code=True)\ndef ok(trust_remote_code=False): pass", 3),
]


def test_sources_were_found():
    names = {p.name for p in SOURCES}
    assert {"models.py", "io.py", "kl.py", "llm.py", "generation.py"} <= names and len(SOURCES) > 20


@pytest.mark.parametrize("check, snippet, n_found", CHECKS, ids=[c[0].__name__ for c in CHECKS])
def test_source_is_clean(check, snippet, n_found):
    assert len(check([("snippet.py", ast.parse(snippet))])) == n_found  # the checker finds what it looks for
    assert check(parsed()) == []


def test_trust_remote_code_parameters_exist():
    """The remote-code check is not vacuous: the package has such parameters and fields."""
    trees = parsed()
    found = [w for w, fn in nodes(trees, ast.FunctionDef) if any(
        a.arg == "trust_remote_code" for a in fn.args.args + fn.args.kwonlyargs)]
    found += [w for w, n in nodes(trees, ast.AnnAssign) if getattr(n.target, "id", None) == "trust_remote_code"]
    assert len(found) >= 3


def subcommands(parser) -> dict:
    """'kl' / 'organism build' -> its parser."""
    out = {}
    for action in parser._subparsers._group_actions:
        for name, sub in action.choices.items():
            out[name] = sub
            if sub._subparsers is not None:
                out.update({f"{name} {k}": v for k, v in subcommands(sub).items()})
    return out


def test_cli_trust_remote_code_flags_default_off():
    with_flag = []
    for name, sub in subcommands(build_parser()).items():
        for action in sub._actions:
            if "--trust-remote-code" in action.option_strings:
                with_flag.append(name)
                assert action.default is False and action.const is True, name
    assert {"kl", "generate", "judge"} <= set(with_flag)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    from conftest import save_tiny_model

    return save_tiny_model(tmp_path_factory.mktemp("sec") / "model")


def test_loader_passes_safetensors_and_no_remote_code(model_dir, monkeypatch):
    """The real loader asks transformers for safetensors and no remote code, and never calls torch.load."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from deepalign.models import load_model

    seen = []
    real_model, real_tok = AutoModelForCausalLM.from_pretrained, AutoTokenizer.from_pretrained

    def spy_model(*args, **kwargs):
        seen.append(("model", kwargs))
        return real_model(*args, **kwargs)

    def spy_tok(*args, **kwargs):
        seen.append(("tokenizer", kwargs))
        return real_tok(*args, **kwargs)

    def no_torch_load(*args, **kwargs):
        raise AssertionError("torch.load called")

    monkeypatch.setattr(AutoModelForCausalLM, "from_pretrained", spy_model)
    monkeypatch.setattr(AutoTokenizer, "from_pretrained", spy_tok)
    monkeypatch.setattr(torch, "load", no_torch_load)
    load_model(str(model_dir))
    kinds = {k: kw for k, kw in seen}
    assert kinds["model"]["use_safetensors"] is True and kinds["model"]["trust_remote_code"] is False
    assert kinds["tokenizer"]["trust_remote_code"] is False


def test_pickled_checkpoint_is_refused(model_dir, tmp_path):
    """A folder whose weights exist only as a pickle (pytorch_model.bin) is not loaded."""
    import torch
    from transformers import AutoModelForCausalLM

    from deepalign.models import load_model

    folder = tmp_path / "pickled"
    folder.mkdir()
    for f in model_dir.iterdir():
        if f.name != "model.safetensors":
            (folder / f.name).write_bytes(f.read_bytes())
    state = AutoModelForCausalLM.from_pretrained(model_dir).state_dict()
    torch.save(state, folder / "pytorch_model.bin")
    with pytest.raises(DeepAlignError, match="cannot load model"):
        load_model(str(folder))


@pytest.mark.parametrize("remote", [False, True], ids=["default", "flag"])
def test_trust_remote_code_is_recorded_in_run_metadata(remote, model_dir, tmp_path, capsys):
    flag = ["--trust-remote-code"] if remote else []
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text('{"prompt": "Hello there", "response": "I am fine, thank you."}\n')
    runs = {
        "kl": ["kl", "--aligned", str(model_dir), "--base", str(model_dir), "--data", str(pairs), "--no-progress"],
        "generate": ["generate", "--model", str(model_dir), "--prompts", str(pairs), "--max-new-tokens", "2",
                     "--no-progress"],
        "judge": ["judge", str(tmp_path / "generate" / "generations.jsonl")],
    }
    for name, argv in runs.items():
        assert main([*argv, "--out", str(tmp_path / name), *(flag if name != "judge" else [])]) == 0, name
        meta = json.loads((tmp_path / name / "meta.json").read_text())
        assert meta["trust_remote_code"] is (remote and name != "judge"), name
