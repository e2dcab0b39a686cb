"""The package as users install it: every package folder listed, console scripts that
resolve, packaged configs by name, and (slow) a plain `pip install .` in a fresh venv
whose console scripts fine-tune and predict outside the repository."""

import ast
import csv
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig

import pytest

import molspectra_jax
from molspectra_jax import examples
from molspectra_jax.experiments import launch
from molspectra_jax.inference import read_molecules

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)


def test_the_package_list_names_every_package_folder(pyproject):
    setup = pyproject["tool"]["setuptools"]
    folders = {name: folder for name, folder in setup["package-dir"].items()}
    for dirpath, _, files in os.walk(os.path.join(ROOT, "molspectra_jax")):
        if "__init__.py" in files:
            relative = os.path.relpath(dirpath, ROOT)
            folders[relative.replace(os.sep, ".")] = relative
    assert sorted(setup["packages"]) == sorted(folders)
    for folder in folders.values():
        assert os.path.isfile(os.path.join(ROOT, folder, "__init__.py")), folder


def test_console_scripts_are_functions_of_the_packaged_commands(pyproject):
    scripts = pyproject["project"]["scripts"]
    assert {"molspectra-pretrain", "molspectra-finetune", "molspectra-predict"} <= set(scripts)
    for name, target in scripts.items():
        module, function = target.split(":")
        assert module.startswith("molspectra_jax.experiments.")
        assert name == "molspectra-" + module.rsplit(".", 1)[1].replace("_", "-")
        # Read, not imported: each command defines its absl flags (one process, one set).
        with open(importlib.util.find_spec(module).origin) as f:
            tree = ast.parse(f.read())
        defined = [n.name for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert function in defined, f"{name}: {module} has no function {function}"


def test_config_names_resolve_to_packaged_files(tmp_path):
    packaged = os.path.dirname(importlib.import_module("molspectra_jax.configs").__file__)
    expected = os.path.join(packaged, "finetune_md17.py")
    assert launch.config_file("finetune_md17:cpu") == expected + ":cpu"
    assert launch.config_file("elsewhere/configs/finetune_md17.py") == expected
    local = tmp_path / "mine.py"
    local.write_text("")
    assert launch.config_file(f"{local}:x") == f"{local}:x"  # a real file wins
    assert launch.config_file("no_such_config") == "no_such_config"  # left to config_flags


def test_example_molecules_ship_with_the_package():
    records, skipped = read_molecules(examples.path(), (1, 6, 7, 8, 9))
    assert len(records) == 8 and not skipped
    with pytest.raises(FileNotFoundError, match="qm9_eight.xyz"):
        examples.path("missing.sdf")


def test_version_is_the_changelogs_latest():
    with open(os.path.join(ROOT, "CHANGELOG.md")) as f:
        headings = [line for line in f if line.startswith("## ")]
    assert headings[0].startswith(f"## {molspectra_jax.__version__} ")


@pytest.mark.slow
def test_plain_install_runs_the_console_scripts_outside_the_repo(tmp_path):
    source = tmp_path / "source"  # the working tree, without the build's leftovers
    skip = shutil.ignore_patterns(".*", "workdirs", "build", "*.egg-info", "__pycache__")
    shutil.copytree(ROOT, source, ignore=skip)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    bin_ = venv / "bin"
    # The dependencies are this environment's (a .pth file; CI's install resolves them
    # from pyproject.toml): the fresh venv installs the package alone, not editable.
    paths = ["import sysconfig", "print(sysconfig.get_paths()['purelib'])"]
    query = subprocess.run([str(bin_ / "python"), "-c", "; ".join(paths)], capture_output=True)
    here = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    with open(os.path.join(query.stdout.decode().strip(), "dependencies.pth"), "w") as f:
        f.write("\n".join(sorted(here)) + "\n")
    install = subprocess.run(
        [str(bin_ / "pip"), "install", "-q", "--no-deps", str(source)],
        capture_output=True,
        text=True,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    shutil.rmtree(source)  # nothing may still read the source tree
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    run = (
        lambda *argv: subprocess.run(  # noqa: E731
            [str(bin_ / argv[0]), *argv[1:]], cwd=outside, capture_output=True, text=True
        )
    )
    finetune = run("molspectra-finetune", "--config", "test", "--workdir", "W")
    assert finetune.returncode == 0, finetune.stderr[-3000:]
    example = run("python", "-c", "from molspectra_jax import examples; print(examples.path())")
    assert "site-packages" in example.stdout
    predict = run(
        "molspectra-predict", "--workdir", "W", "--input", example.stdout.strip(), "--out", "p.csv"
    )
    assert predict.returncode == 0, predict.stderr[-3000:]
    rows = list(csv.DictReader(open(outside / "p.csv")))
    assert len(rows) == 8 and set(rows[0]) == {"name", "gap", "u0"}
    assert rows[0]["name"].startswith("qm9_1 ")
