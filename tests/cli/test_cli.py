"""The command line as a user meets it: the README's commands run as typed from the repository root, and
bad input gets one `error: ...` line naming the flag or the file, with exit status 2, before any work."""
import os
import pathlib
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch

from erda_sparse import evaluate, train
from erda_sparse.checkpoint import listed
from erda_sparse.data import synthetic

REPO = pathlib.Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()
FAST = ["--model", "MinkUNet14A", "--voxel-size", "0.1", "--batch-size", "1", "--synthetic-rooms", "3"]


def readme_block(after):
    """The first ```bash block after the heading text `after`, as its command lines."""
    start = README.index(after)
    block = re.search(r"```bash\n(.*?)```", README[start:], re.S).group(1)
    return [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def user_env(tmp_path):
    """The environment of a user's shell: no PYTHONPATH, no ScanNet, a cache of this test's own."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "SCANNET_ROOT")}
    return {**env, "ERDA_CACHE_DIR": str(tmp_path / "cache")}


def test_ci_runs_exactly_the_readme_test_command():
    (test_cmd,) = readme_block("run the whole test suite")
    assert test_cmd.strip() in (REPO / ".ci" / "run").read_text().splitlines()


@pytest.mark.slow
def test_readme_main_command_smoke_and_evaluate_work_from_the_repository_root(tmp_path):
    """`python -m` puts the current folder first on sys.path: from the root of a checkout the source tree
    is what gets imported, so the kernels must be importable from there (the install builds them in place)."""
    (main_cmd,) = readme_block("run the main job")
    install, trainer = (c.strip() for c in main_cmd.split("&&"))
    assert install == "bash scripts/install.sh"
    argv = shlex.split(trainer)
    assert argv[:3] == ["python", "-m", "erda_sparse.train"]
    env = user_env(tmp_path)
    run_dir = tmp_path / "run"
    r = subprocess.run([sys.executable, *argv[1:], "--max-steps", "2", "--synthetic-rooms", "3", "--out",
                        str(run_dir)], cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "done: best validation mIoU" in r.stdout and (run_dir / "best.pt").is_file()
    r = subprocess.run([sys.executable, "-m", "erda_sparse.smoke"], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and "smoke test passed" in r.stdout, r.stdout + r.stderr[-3000:]
    r = subprocess.run([sys.executable, "-m", "erda_sparse.evaluate", "--ckpt", str(run_dir / "best.pt"),
                        "--no-ply"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "mIoU" in r.stdout, r.stdout + r.stderr[-3000:]


def test_kernel_import_error_names_the_shadowing_source_tree(tmp_path):
    """A non-editable install (`pip install .`) run from a checkout's root: the checkout's erda_sparse/,
    without built kernels, comes first on sys.path and shadows the installed copy. The error says which tree
    was imported, where the built copy is, and how to fix it. (With the README's editable install this
    cannot happen: setuptools' editable finder serves the built kernels; the test removes it.)"""
    import erda_sparse

    pkg = pathlib.Path(erda_sparse.__file__).parent
    bare, site = tmp_path / "checkout", tmp_path / "site"
    for root in (bare, site):
        for py in pkg.rglob("*.py"):
            dest = root / "erda_sparse" / py.relative_to(pkg)
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(py.read_text())
    (site / "erda_sparse" / next(pkg.glob("_C*.so")).name).write_bytes(b"")  # the installed copy's kernels
    code = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
            f"sys.path.insert(1, {str(site)!r}); import erda_sparse.ops")
    r = subprocess.run([sys.executable, "-c", code], cwd=bare, env=user_env(tmp_path), capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert "a source tree without built kernels" in last and str(bare / "erda_sparse") in last, last
    assert "pip install --no-build-isolation -e ." in last and str(site / "erda_sparse") in last, last


# ---------------------------------------------------------------------------------------------------------
# bad input: one line, exit status 2, nothing trained or written

def call(main, argv, capsys):
    """(status, stdout, stderr) of a command-line main, as the shell would see them."""
    try:
        status = main(argv)
    except SystemExit as exc:  # argparse's errors
        status = exc.code
    out, err = capsys.readouterr()
    return status, out, err


def assert_one_line_error(status, err, *names, code=2):
    lines = err.strip().splitlines()
    assert status == code and len(lines) == 1 and lines[0].startswith("error: "), (status, err)
    for name in names:
        assert name in lines[0], (name, lines[0])


FLAG_CASES = [
    (["--labels-per-class", "0"], "--labels-per-class"),
    (["--labels-per-class", "-3"], "--labels-per-class"),
    (["--labels-per-scene", "0"], "--labels-per-scene"),
    (["--label-ratio", "0"], "--label-ratio"),
    (["--label-ratio", "2"], "--label-ratio"),
    (["--label-ratio", "nan"], "--label-ratio"),
    (["--epochs", "0"], "--epochs"),
    (["--voxel-size", "0"], "--voxel-size"),
    (["--voxel-size", "-1"], "--voxel-size"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "inf"], "--lr"),
    (["--keep", "0"], "--keep"),
    (["--batch-size", "0"], "--batch-size"),
    (["--eval-every", "0"], "--eval-every"),
    (["--ckpt-every", "0"], "--ckpt-every"),
    (["--max-steps", "0"], "--max-steps"),
    (["--threads", "0"], "--threads"),
    (["--workers", "-1"], "--workers"),
    (["--seed", "-1"], "--seed"),
    (["--erda-weight", "nan"], "--erda-weight"),
    (["--entropy-weight", "-1"], "--entropy-weight"),
    (["--epochs", "two"], "--epochs"),
    (["--resume"], "--resume needs --out"),
    ([], "--scannet"),
]


@pytest.mark.parametrize("flags,name", FLAG_CASES, ids=[" ".join(c[0]) or "no-task" for c in FLAG_CASES])
def test_bad_flag_is_one_line_naming_it(env, capsys, flags, name):
    argv = (["--scannet"] if name != "--scannet" else []) + FAST + flags
    argv += [] if "--resume" in flags else ["--out", str(env / "run")]
    status, out, err = call(train.main, argv, capsys)
    assert_one_line_error(status, err, name)
    assert not (env / "run").exists() and not (env / "cache").exists()  # nothing prepared, nothing written


def bad_scannet_root(tmp_path, spoil):
    """Three synthetic rooms in ScanNet's layout, spoiled by `spoil(root, train_scenes)`."""
    root = tmp_path / "data"
    splits = synthetic.write_dataset(str(root), rooms=3, seed=1)
    spoil(root, splits["train"])
    return root


def truncate(root, scenes):
    p = root / "scans" / scenes[0] / f"{scenes[0]}_vh_clean_2.ply"
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])
    return p


def other_count(root, scenes):
    from plyfile import PlyData, PlyElement

    p = root / "scans" / scenes[0] / f"{scenes[0]}_vh_clean_2.labels.ply"
    with open(p, "rb") as f:
        v = np.array(PlyData.read(f)["vertex"].data[:-5])  # a copy: the file is rewritten below
    PlyData([PlyElement.describe(v, "vertex")]).write(str(p))
    return p


def missing_scene(root, scenes):
    p = root / "scannetv2_train.txt"
    p.write_text(p.read_text() + "scene0999_00\n")
    return p


@pytest.mark.parametrize("spoil", [truncate, other_count, missing_scene])
def test_bad_scannet_data_is_one_line_naming_the_file(env, capsys, spoil):
    named = []
    root = bad_scannet_root(env, lambda r, s: named.append(spoil(r, s)))
    status, out, err = call(train.main, ["--scannet", *FAST, "--data-root", str(root), "--out", str(env / "run")],
                            capsys)
    assert_one_line_error(status, err, str(named[0]))
    assert "epoch 1" not in out and not listed(str(env / "run"))


@pytest.mark.parametrize("what", ["missing", "empty", "no-splits", "a-file"])
def test_explicit_data_root_that_is_not_scannet_is_an_error(env, capsys, monkeypatch, what):
    root = env / "mydata"
    if what == "empty":
        root.mkdir()
    elif what == "no-splits":
        (root / "scans").mkdir(parents=True)
    elif what == "a-file":
        root.write_text("x")
    status, out, err = call(train.main, ["--scannet", *FAST, "--data-root", str(root)], capsys)
    assert_one_line_error(status, err, "--data-root", str(root))
    assert "synthetic" not in out
    if what in ("empty", "no-splits"):
        assert "scannetv2_train.txt" in err
    monkeypatch.setenv("SCANNET_ROOT", str(root))  # a path given by the variable: the same
    status, out, err = call(train.main, ["--scannet", *FAST], capsys)
    assert_one_line_error(status, err, "$SCANNET_ROOT", str(root))


def test_out_that_is_a_file_under_a_file_or_an_earlier_run(env, capsys):
    afile = env / "afile"
    afile.write_text("mine")
    for out in (afile, afile / "run"):
        status, _, err = call(train.main, ["--scannet", *FAST, "--out", str(out)], capsys)
        assert_one_line_error(status, err, "--out", str(out))
    assert afile.read_text() == "mine"
    earlier = env / "earlier"
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    status, _, err = call(train.main, ["--scannet", *FAST, "--out", str(earlier)], capsys)
    assert_one_line_error(status, err, "--out", "--resume")
    assert sorted(os.listdir(earlier)) == ["config.json"] and (earlier / "config.json").read_text() == "{}"


def test_resume_in_an_empty_or_missing_folder(env, capsys):
    (env / "empty").mkdir()
    status, _, err = call(train.main, ["--scannet", *FAST, "--out", str(env / "empty"), "--resume"], capsys)
    assert_one_line_error(status, err, str(env / "empty"), "no readable checkpoint")
    status, _, err = call(train.main, ["--scannet", *FAST, "--out", str(env / "nothing"), "--resume"], capsys)
    assert_one_line_error(status, err, "--resume", str(env / "nothing"))


@pytest.mark.parametrize("kind", ["torch", "text", "npy", "missing"])
def test_label_file_that_is_not_one(env, capsys, kind):
    path = env / f"labels.{kind}"
    if kind == "torch":
        torch.save({"scene0000_00": torch.arange(5)}, path)
    elif kind == "text":
        path.write_text("1 2 3\n")
    elif kind == "npy":
        np.save(path, np.arange(4))  # labels.npy: a plain array
    status, _, err = call(train.main, ["--scannet", *FAST, "--label-file", str(path), "--out", str(env / "r")],
                          capsys)
    assert_one_line_error(status, err, str(path), "not found" if kind == "missing" else "not a weak-label file")
    assert "pickled" not in err and not (env / "r" / "labels.npz").exists()


@pytest.fixture
def short_run(env, capsys):
    """One epoch on three synthetic rooms (two training rooms: two steps)."""
    out = env / "run"
    assert train.main(["--scannet", *FAST, "--epochs", "1", "--out", str(out)]) == 0
    capsys.readouterr()
    return out


def test_resume_with_another_model_and_evaluate_on_a_foreign_checkpoint(short_run, env, capsys):
    status, _, err = call(train.main, ["--scannet", *FAST, "--epochs", "2", "--out", str(short_run), "--resume",
                                       "--model", "MinkUNet14B"], capsys)
    assert_one_line_error(status, err, "--model 'MinkUNet14B' (the run has 'MinkUNet14A')")
    foreign = env / "foreign.pt"
    for obj in ({"state_dict": {"w": torch.zeros(2)}}, torch.zeros(3), [1, 2]):
        torch.save(obj, foreign)
        status, _, err = call(evaluate.main, ["--ckpt", str(foreign)], capsys)
        assert_one_line_error(status, err, str(foreign), "not an erda_sparse checkpoint")
    state = torch.load(short_run / "best.pt", weights_only=False)
    state["model"] = {k: v[:1] if v.ndim else v for k, v in state["model"].items()}
    torch.save(state, foreign)
    status, _, err = call(evaluate.main, ["--ckpt", str(foreign)], capsys)
    assert_one_line_error(status, err, str(foreign), "do not fit a MinkUNet14A")
    status, _, err = call(evaluate.main, ["--ckpt", str(env / "none.pt")], capsys)
    assert_one_line_error(status, err, str(env / "none.pt"), "not found")
    status, _, err = call(evaluate.main, ["--ckpt", str(short_run / "best.pt"), "--out", str(foreign)], capsys)
    assert_one_line_error(status, err, "--out", str(foreign))


class NanGradient(torch.autograd.Function):
    """The identity forward; a NaN gradient backward."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, g):
        return g * float("nan")


@pytest.mark.parametrize("where", ["loss", "gradient"])
def test_non_finite_training_stops_naming_the_step_and_keeps_good_checkpoints(short_run, env, capsys, monkeypatch,
                                                                               where):
    """A NaN loss (step 3) stops before the step changes anything; a NaN gradient at an epoch's last step
    (step 4) poisons the parameters, and the epoch-end checkpoint refuses them. Either way best.pt and the
    newest checkpoint are untouched."""
    before = {p.name: p.read_bytes() for p in short_run.iterdir() if p.suffix == ".pt"}
    real = train.ops.erda_loss
    calls = []

    def poisoned(*a, **k):
        loss = real(*a, **k)
        if k.get("reduction") == "none":  # the training step's one call
            calls.append(1)
            if where == "loss" and len(calls) == 1:
                return loss * float("nan")
            if where == "gradient" and len(calls) == 2:
                return NanGradient.apply(loss)
        return loss

    monkeypatch.setattr(train.ops, "erda_loss", poisoned)
    status, out, err = call(train.main, ["--scannet", *FAST, "--epochs", "3", "--out", str(short_run), "--resume",
                                         "--extend"], capsys)
    step = 3 if where == "loss" else 4
    assert_one_line_error(status, err, f"step {step}", code=1)
    assert ("training loss is nan" if where == "loss" else "non-finite values") in err
    after = {p.name: p.read_bytes() for p in short_run.iterdir() if p.suffix == ".pt"}
    assert after == before  # no checkpoint written or replaced, best.pt untouched


def test_the_last_line_says_why_curves_are_missing(short_run, env, capsys, monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name.startswith("matplotlib"):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    out_dir = env / "run2"
    status, out, _ = call(train.main, ["--scannet", *FAST, "--max-steps", "1", "--out", str(out_dir)], capsys)
    assert status == 0 and not (out_dir / "curves.png").exists()
    last = out.strip().splitlines()[-1]
    assert "curves in" not in last and "no curves.png: matplotlib cannot be imported" in last
    assert (short_run / "curves.png").is_file()  # with matplotlib, as the run before said


@pytest.mark.parametrize("argv,value", [(["--scannet", "--threads", "2"], "2"), (["--threads=3"], "3"),
                                        (["--threads", "0"], None), (["--threads", "x"], None), ([], None)])
def test_threads_flag_is_put_in_the_environment_before_torch_loads(monkeypatch, argv, value):
    from erda_sparse import threads

    for var in threads.ENV_VARS:
        monkeypatch.setenv(var, "7")
    threads.preset_environment(argv)
    assert [os.environ[v] for v in threads.ENV_VARS] == [value or "7"] * len(threads.ENV_VARS)
