"""First use of a built-in model from several processes at once (issue 16): one builds under the file lock
into a temporary folder renamed into place, the others wait and use its result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from deepalign.organism.build import OrganismConfig, build_organism

TINY = OrganismConfig(hidden_size=16, base_steps=6, aligned_steps=2, batch_size=4, answers_per_topic=2)
TINY_ARGS = {"hidden_size": 16, "base_steps": 6, "aligned_steps": 2, "batch_size": 4, "answers_per_topic": 2}

# Each process imports deepalign, says it is ready, waits for "go", then resolves organism-aligned and loads it.
DRIVER = """
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
import deepalign.pipeline.builtins as builtins
from deepalign.organism.build import OrganismConfig
builtins.ORGANISM_CONFIG = OrganismConfig(**json.loads(sys.argv[1]))
sync = Path(sys.argv[2])
(sync / f"ready-{sys.argv[3]}").touch()
while not (sync / "go").exists():
    time.sleep(0.01)
path = builtins.resolve_model_path("organism-aligned")
model, tok = builtins.load_model("organism-aligned")
print(json.dumps({"path": path, "vocab": len(tok)}))
"""


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_two_processes_on_an_empty_cache_build_the_organism_once(tmp_path):
    cache, sync = tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "DEEPALIGN_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    procs = [subprocess.Popen([sys.executable, "-c", DRIVER, json.dumps(TINY_ARGS), str(sync), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((sync / f"ready-{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (sync / "go").touch()  # both start resolving at the same moment
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results, strict=True):
        assert p.returncode == 0, err
        assert "Traceback" not in err and json.loads(out)["path"] == str(cache / "organism" / "aligned")
    errs = [err for _, err in results]
    assert sum("building the model organism" in e for e in errs) == 1, errs  # one built ...
    assert sum("waiting for another process building organism" in e for e in errs) == 1, errs  # ... one waited
    assert sorted(p.name for p in cache.iterdir()) == [".organism.lock", "organism"]  # no temporary folder left
    single = tmp_path / "single"
    build_organism(single, TINY, progress=False)
    assert _files(cache / "organism") == _files(single)  # the files are those of a single build


def test_a_stale_temporary_build_is_removed_and_an_old_organism_replaced(tmp_path, monkeypatch):
    """A build killed midway leaves ``organism.tmp-<pid>``; an older recipe's organism is replaced whole."""
    import deepalign.pipeline.builtins as builtins

    cache = tmp_path / "cache"
    monkeypatch.setenv("DEEPALIGN_CACHE", str(cache))
    monkeypatch.setattr(builtins, "ORGANISM_CONFIG", TINY)
    (cache / "organism.tmp-999999" / "base").mkdir(parents=True)
    (cache / "organism" / "deep").mkdir(parents=True)
    (cache / "organism" / "organism.json").write_text(json.dumps({"version": -1}))
    (cache / "organism" / "deep" / "stale.txt").write_text("from an older recipe")
    path = Path(builtins.resolve_model_path("organism-base"))
    assert path == cache / "organism" / "base" and (path / "config.json").exists()
    assert sorted(p.name for p in cache.iterdir()) == [".organism.lock", "organism"]
    assert not (cache / "organism" / "deep").exists()


CONVERT_DRIVER = """
import json, logging, sys, time
from pathlib import Path
logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
import deepalign.pipeline.builtins as builtins

def convert(src, dest):  # stands in for the GGUF conversion: slow, and writes its files one by one
    dest.mkdir(parents=True)
    for name in ("tokenizer.json", "model.safetensors", "config.json"):
        time.sleep(1.0)
        (dest / name).write_text(name)

builtins.smollm2_gguf_folder = lambda: Path(".")
builtins.convert_smollm2 = convert
sync = Path(sys.argv[1])
(sync / f"ready-{sys.argv[2]}").touch()
while not (sync / "go").exists():
    time.sleep(0.01)
print(builtins.resolve_model_path("smollm2-135m-instruct"))
"""


def test_two_processes_convert_smollm2_once(tmp_path):
    cache, sync = tmp_path / "cache", tmp_path / "sync"
    sync.mkdir()
    env = {**os.environ, "DEEPALIGN_CACHE": str(cache)}
    procs = [subprocess.Popen([sys.executable, "-c", CONVERT_DRIVER, str(sync), str(i)], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    deadline = time.time() + 120
    while not all((sync / f"ready-{i}").exists() for i in range(2)):
        assert time.time() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.05)
    (sync / "go").touch()
    results = [p.communicate(timeout=120) for p in procs]
    target = cache / "models" / "smollm2-135m-instruct"
    assert [p.returncode for p in procs] == [0, 0], results
    assert [out.strip() for out, _ in results] == [str(target)] * 2
    errs = [err for _, err in results]
    assert sum("converting" in e for e in errs) == 1 and sum("waiting for another process" in e for e in errs) == 1
    assert sorted(p.name for p in target.iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["smollm2-135m-instruct"]
