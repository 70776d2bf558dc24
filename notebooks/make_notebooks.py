"""Write notebooks/colab.ipynb and notebooks/kaggle.ipynb (outputs empty). Run from the repo root.

The cell tagged `parameters` holds plain values, as papermill expects: tests (and `papermill -p IMAGE_SIZE 32 ...`)
put an `injected-parameters` cell after it.
"""
import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

PARAMS = '''# Demo settings: change them (and OVERRIDES, any config key) for real work.
PROJECT = "demo"
IMAGE_SIZE = 128
PATIENTS = 120
FOLDS = 5
LR_STEPS = 100
OVERRIDES = ["train.epochs=4"]'''

# The wheel you built (`pip wheel --no-deps -w dist .` in a checkout) and copied to MyDrive; Drive is mounted first
# because the wheel lives there (setup() then finds it mounted).
COLAB_INSTALL = '''# kitpkg from the wheel you put on Drive (build it with `pip wheel --no-deps -w dist .` in the repository).
# Once the repository is published: !pip install -q "git+<its URL>" instead of these two lines.
from google.colab import drive; drive.mount("/content/drive")
!pip install -q /content/drive/MyDrive/kitpkg-*.whl'''
# The line `kitpkg wheelhouse` prints (kitpkg.notebook.wheelhouse.install_line): install.sh of the attached wheelhouse
KAGGLE_INSTALL = ('sh "$(dirname "$(find /kaggle/input -name \'kitpkg-*.whl\' | head -n 1)")/install.sh"')

SETUP = '''import kitpkg
from kitpkg import notebook as nb
env = kitpkg.setup(project=PROJECT)'''

COMMON_TAIL = [
    new_markdown_cell("The experiment: a config (YAML + overrides) whose run directory is under `env.run_dir`. "
                      "Keep the cells as they are between sessions: the run resumes only with the same config."),
    new_code_cell('config = nb.experiment(env, shards, "demo", overrides=[f"data.image_size={IMAGE_SIZE}", '
                  '*OVERRIDES])'),
    new_markdown_cell("LR finder (runs once per config; a re-run reuses its suggestion)."),
    new_code_cell("nb.find_lr(config, num_training=LR_STEPS)"),
    new_markdown_cell("Cross-validation: every fold, OOF predictions, CV score, test predictions averaged over folds. "
                      "After a crash, run all cells again: finished folds are skipped and the running one resumes "
                      "mid-epoch from its last checkpoint in the run directory."),
    new_code_cell("result = kitpkg.run_cv(config)"),
    new_code_cell("nb.submit(env, result)"),
]


def notebook(title, install, intro, data_cells, platform):
    cells = [new_markdown_cell(f"# {title}\n\n{intro}"),
             new_code_cell(install, metadata={"tags": ["install"]}),
             new_code_cell(PARAMS, metadata={"tags": ["parameters"]}),
             new_code_cell(SETUP), *data_cells, *COMMON_TAIL]
    nb = new_notebook(cells=cells)
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "kitpkg": {"platform": platform}}
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"{platform}-{i:02d}"
    return nb


colab = notebook(
    "kitpkg on Colab",
    COLAB_INSTALL,
    "Run all cells. After the runtime dies (idle, 12 h, crash), run all cells again: Drive is mounted again, the "
    "shards are found, and training resumes from the checkpoints in the run directory on Drive.",
    [new_markdown_cell("Shards: the demo data is made on local disk and converted into `env.data_dir` on Drive "
                       "(skipped once done). For your own data use\n`kitpkg.convert(IMAGES, TRAIN_CSV, env.data_dir / "
                       "\"shards\", sizes=(384,), test_csv=TEST_CSV)` and `shards = env.data_dir / \"shards\"`. "
                       "Training copies the shards from Drive to local disk (verified) before reading them: "
                       "`nb.experiment` sets `data.cache_dir` to `env.cache_dir`."),
     new_code_cell("shards = nb.demo_shards(env, IMAGE_SIZE, patients=PATIENTS, folds=FOLDS)")],
    "colab")

kaggle = notebook(
    "kitpkg on Kaggle",
    "!" + KAGGLE_INSTALL,
    "Works with the internet off: attach the dataset made by `kitpkg wheelhouse` (the install cell finds it), and a "
    "dataset of shards made by `kitpkg convert` (found by walking `/kaggle/input`). Outputs go to `/kaggle/working`.\n\n"
    "**When the session dies**, `/kaggle/working` survives only with *Settings → Persistence: Files* (best effort). "
    "The safe way: *Save Version* (Save & Run All), then attach that version's output to a new session "
    "(*Add Input → Your Work*) and run all cells: the run directory is found in `/kaggle/input`, copied (verified) "
    "into `/kaggle/working`, finished folds are kept and the running fold resumes from its last checkpoint.",
    [new_markdown_cell("Shards: an attached shard set of `IMAGE_SIZE` px if there is one, otherwise the demo data "
                       "converted into `/kaggle/working`."),
     new_code_cell("shards = nb.find_shards(env, IMAGE_SIZE, demo=True, patients=PATIENTS, folds=FOLDS)")],
    "kaggle")

nbformat.write(colab, "notebooks/colab.ipynb")
nbformat.write(kaggle, "notebooks/kaggle.ipynb")
