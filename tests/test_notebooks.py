"""The notebooks execute top to bottom, headless, on tiny demo data, each under its faked platform and locally.

Faked: the platform variables (Kaggle's image also sets COLAB_*), temp folders standing in for /kaggle and for Drive and
/content, a fake `google.colab` importable in the kernel, and no internet. The install cell is skipped (the kit is
installed in this venv; test_wheelhouse.py installs it offline into a clean venv) but checked against the wheelhouse.
"""
from __future__ import annotations

import re
import shutil
import stat
from pathlib import Path

import pandas as pd
import pytest

from fakes import notebooks as N
from fakes.fake_env import calls, fake_platform_env
from kitpkg.notebook.attached import Attached
from kitpkg.notebook.bootstrap import Environment
from kitpkg import notebook as nb
from kitpkg.errors import KitError
from kitpkg.notebook.wheelhouse import install_line

# tiny: 32 px demo images, 2 folds, 1 epoch, a 5-step LR sweep (the defaults are what a user wants)
TINY = dict(IMAGE_SIZE=32, PATIENTS=8, FOLDS=2, LR_STEPS=5,
            OVERRIDES=["train.epochs=1", "data.batch_size=8", "data.num_workers=0", "model.name=test_resnet"])


def _tree(root: Path):
    return sorted((str(p.relative_to(root)), p.stat().st_size if p.is_file() else -1) for p in root.rglob("*"))


def test_notebooks_are_thin_and_stripped():
    for name in ("colab.ipynb", "kaggle.ipynb"):
        nb = N.load(name, skip_tags=())
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in code), name
        steps = [c for c in code if not {"install", "parameters"} & set(c.metadata.get("tags", []))]
        # every step is one call into the kit (setup's cell also holds its two imports)
        assert all(len([l for l in c.source.splitlines() if l and not l.startswith(("import", "from"))]) == 1
                   for c in steps), name
        sources = "\n".join(c.source for c in code)
        for call in ("kitpkg.setup(", "nb.experiment(", "nb.find_lr(", "kitpkg.run_cv(", "nb.submit("):
            assert call in sources, (name, call)
    kaggle_install = N.load("kaggle.ipynb", skip_tags=()).cells[1]
    assert kaggle_install.source == "!" + install_line()  # the line `kitpkg wheelhouse` prints
    assert "install.sh" in kaggle_install.source  # the attached wheelhouse's own offline install


@pytest.mark.parametrize("name", ["colab.ipynb", "kaggle.ipynb"])
def test_parameters_cell_holds_plain_values_as_papermill_expects(name):
    import ast

    cells = N.load(name, skip_tags=()).cells
    (params,) = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
    assert "os.environ" not in params.source and "KITPKG_NB_" not in params.source
    for stmt in ast.parse(params.source).body:  # NAME = literal, nothing computed (papermill overrides by name)
        assert isinstance(stmt, ast.Assign) and len(stmt.targets) == 1, ast.unparse(stmt)
        ast.literal_eval(stmt.value)
    names = {s.targets[0].id for s in ast.parse(params.source).body}
    assert {"PROJECT", "IMAGE_SIZE", "PATIENTS", "FOLDS", "LR_STEPS", "OVERRIDES"} <= names
    injected = N.load(name, parameters={"IMAGE_SIZE": 32}).cells
    at = [i for i, c in enumerate(injected) if "parameters" in c.metadata.get("tags", [])][0]
    assert injected[at + 1].metadata["tags"] == ["injected-parameters"] and "IMAGE_SIZE = 32" in injected[at + 1].source


def test_colab_install_cell_runs_as_written():
    (install,) = [c for c in N.load("colab.ipynb", skip_tags=()).cells if "install" in c.metadata.get("tags", [])]
    runnable = [line for line in install.source.splitlines() if not line.lstrip().startswith("#")]
    assert "YOUR_ORG" not in install.source and not any("<" in line for line in runnable)
    assert "!pip install -q /content/drive/MyDrive/kitpkg-*.whl" in runnable
    # Drive holds the wheel, so it is mounted before pip runs
    assert runnable.index("!pip install -q /content/drive/MyDrive/kitpkg-*.whl") > next(
        i for i, line in enumerate(runnable) if "drive.mount(" in line)


@pytest.mark.slow
def test_colab_notebook_on_fake_colab(tmp_path):
    env = fake_platform_env("colab", tmp_path)
    nb = N.execute(N.load("colab.ipynb", parameters=TINY), env, tmp_path)
    out = N.text(nb)
    assert "kitpkg platform" in out and ": colab" in out and re.search(r"internet +: no", out)
    assert [c["call"] for c in calls(tmp_path / "colab-calls.jsonl")] == ["mount"]
    project = tmp_path / "drive" / "MyDrive" / "demo"
    run = project / "runs" / "demo"
    assert (project / "data" / "demo-shards" / "32" / "manifest.json").is_file()  # shards on Drive
    assert not list((project / "data").rglob("*.jpg"))  # loose JPEGs stay on local disk
    shards = sorted((project / "data" / "demo-shards" / "32").glob("*.tfrec"))
    cached = {c.name.split("-", 1)[1]: c for c in (tmp_path / "content" / "demo" / "cache").glob("*.tfrec")}
    assert sorted(cached) == [s.name for s in shards]  # copied to local disk and read from there, not from Drive
    assert all(cached[s.name].read_bytes() == s.read_bytes() for s in shards)
    assert (run / "state.json").is_file() and list((run / "fold0" / "ckpt").glob("*.ckpt"))
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 32 and oof["id"].is_unique
    assert len(pd.read_csv(project / "submission.csv")) == 10
    # the run directory moves between machines (Colab -> Kaggle): none of its text files names a local path
    for f in run.rglob("*"):
        if f.suffix in (".json", ".csv", ".md", ".txt", ".yaml"):
            assert str(tmp_path) not in f.read_text(), f
        if f.suffix == ".ckpt":  # nor a checkpoint: data.cache_dir (a local path) stays out of the hyperparameters
            assert str(tmp_path).encode() not in f.read_bytes(), f


@pytest.mark.slow
@pytest.mark.parametrize("name", ["colab.ipynb", "kaggle.ipynb"])
def test_notebook_on_a_local_machine(tmp_path, name):
    # the same cells on a workstation (KITPKG_PLATFORM=local): no Drive, no /kaggle, everything under the local root
    env = fake_platform_env("local", tmp_path)
    nb = N.execute(N.load(name, parameters=TINY), env, tmp_path)
    out = N.text(nb)
    assert ": local" in out and "shard cache" not in out  # local disk: shards are read in place
    project = tmp_path / "local" / "demo"
    oof = pd.read_csv(project / "runs" / "demo" / "oof.csv")
    assert len(oof) == 32 and oof["id"].is_unique
    assert len(pd.read_csv(project / "submission.csv")) == 10
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local"]  # nothing written outside the project root


@pytest.fixture(scope="module")
def small_shards(tmp_path_factory, demo_source):
    """The conftest demo images as 32 px shards in 2 folds (what `kitpkg convert` would have uploaded)."""
    from kitpkg.shards.convert import convert

    out = tmp_path_factory.mktemp("nb_shards")
    return convert(demo_source.images, demo_source.train_csv, out, sizes=(32,), folds=2,
                   test_csv=demo_source.test_csv, shard_samples=16, workers=1, progress=False)[32]


@pytest.mark.slow
def test_kaggle_notebook_offline_with_attached_shards(tmp_path, small_shards):
    env = fake_platform_env("kaggle", tmp_path)
    attached = tmp_path / "kaggle" / "input" / "melanoma-shards" / "32"
    shutil.copytree(small_shards.root, attached)
    for p in [attached, *attached.rglob("*")]:  # /kaggle/input is read-only
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    before = _tree(tmp_path / "kaggle" / "input")
    try:
        nb = N.execute(N.load("kaggle.ipynb", parameters=TINY), env, tmp_path)
    finally:
        for p in [attached, *attached.rglob("*")]:
            p.chmod(p.stat().st_mode | stat.S_IWUSR)
    out = N.text(nb)
    assert ": kaggle" in out and f"using the shards in {attached}" in out
    assert _tree(tmp_path / "kaggle" / "input") == before
    run = tmp_path / "kaggle" / "working" / "demo" / "runs" / "demo"
    oof = pd.read_csv(run / "oof.csv")
    assert sorted(oof["id"]) == sorted(i for s in small_shards.select("train") for i in s.ids)
    sub = pd.read_csv(tmp_path / "kaggle" / "working" / "submission.csv")
    assert len(sub) == small_shards.num_samples("test") and list(sub.columns) == ["image_name", "target"]


def _env(tmp_path, weights=(), internet=False, cache_dir=None):
    return Environment(platform="kaggle", project="p", run_dir=tmp_path / "runs", data_dir=tmp_path / "data",
                       scratch_dir=tmp_path / "tmp", cache_dir=cache_dir, submit_dir=tmp_path / "working",
                       attached=Attached(weights=tuple(weights)), internet=internet)


def test_experiment_caches_shards_where_the_platform_says(tmp_path):
    from kitpkg.config import config_hash
    from kitpkg.train.model import portable_config

    local = nb.experiment(_env(tmp_path), tmp_path / "shards", "exp")
    assert local.data.cache_dir is None  # shards on local disk (Kaggle input, a local run) are read in place
    colab = nb.experiment(_env(tmp_path, cache_dir=tmp_path / "content" / "cache"), tmp_path / "shards", "exp")
    assert colab.data.cache_dir == str(tmp_path / "content" / "cache")  # Drive shards are copied here first
    assert config_hash(colab) == config_hash(local)  # where the cache lives does not change results
    assert portable_config(colab)["data"]["cache_dir"] is None  # nor does it go into checkpoints
    mine = nb.experiment(_env(tmp_path, cache_dir=tmp_path / "c"), tmp_path, "e", overrides=["data.cache_dir=null"])
    assert mine.data.cache_dir is None  # the user's overrides win


def test_experiment_config_and_offline_weights(tmp_path):
    env = _env(tmp_path, weights=[tmp_path / "in" / "resnet10t.safetensors", tmp_path / "in" / "resnet18.pth"])
    config = nb.experiment(env, tmp_path / "my shards: 384", "exp1", overrides=["train.epochs=2"])
    assert config.data.shards == str(tmp_path / "my shards: 384") and config.train.epochs == 2
    assert config.output.run_dir == str(tmp_path / "runs" / "exp1") and config.model.weights is None
    offline = nb.experiment(env, tmp_path, "exp2", overrides=["model.pretrained=true", "model.name=resnet18"])
    assert offline.model.weights == str(tmp_path / "in" / "resnet18.pth")
    with pytest.raises(KitError, match="kitpkg weights efficientnet_b0"):
        nb.experiment(env, tmp_path, "exp3", overrides=["model.pretrained=true", "model.name=efficientnet_b0"])
    online = nb.experiment(_env(tmp_path, internet=True), tmp_path, "e", overrides=["model.pretrained=true"])
    assert online.model.weights is None  # timm downloads them


def test_find_lr_runs_once_per_config(tmp_path, monkeypatch):
    import kitpkg.train.lr_find as lr_find

    sweeps = []

    def fake_sweep(config, run_dir, fold=0, **kwargs):
        sweeps.append(config.optim.lr)
        (run_dir / "lr_find.png").parent.mkdir(parents=True, exist_ok=True)
        (run_dir / "lr_find.png").write_bytes(b"png")
        return {"suggestion": 0.0123456, "plot": str(run_dir / "lr_find.png")}

    monkeypatch.setattr(lr_find, "run_lr_find", fake_sweep)
    env = _env(tmp_path)
    config = nb.experiment(env, tmp_path, "exp")
    assert nb.find_lr(config) == 0.0123 and config.optim.lr == 0.0123
    again = nb.experiment(env, tmp_path, "exp")  # the same cells after a crash
    assert nb.find_lr(again) == 0.0123 and again.optim.lr == 0.0123 and len(sweeps) == 1
    other = nb.experiment(env, tmp_path, "exp", overrides=["model.name=resnet18"])
    nb.find_lr(other)
    assert len(sweeps) == 2
    assert str(tmp_path) not in (tmp_path / "runs" / "exp" / "lr_suggestion.json").read_text()


def test_submit_puts_the_file_where_kaggle_scores_it(tmp_path, capsys):
    from kitpkg.train.results import CVResult

    run = tmp_path / "runs" / "exp"
    run.mkdir(parents=True)
    (run / "submission.csv").write_text("image_name,target\na,0.5\n")
    (tmp_path / "working").mkdir()
    result = CVResult(run, "auc", scores={0: 0.9}, mean=0.9, std=0.0, submission_path=run / "submission.csv")
    assert nb.submit(_env(tmp_path), result) == tmp_path / "working" / "submission.csv"
    assert (tmp_path / "working" / "submission.csv").read_text() == "image_name,target\na,0.5\n"
    assert "fold 0: auc 0.9000" in capsys.readouterr().out
    with pytest.raises(KitError, match="folds still to run: \\[1\\]"):
        nb.submit(_env(tmp_path), CVResult(run, "auc", pending=[1]))
