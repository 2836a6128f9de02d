"""Packaging: what ``pip install .`` builds from pyproject.toml, checked without installing anything.

The install itself (a venv, ``pip install .``, ``charlm train`` from another folder) is too slow
for the suite; these tests check the pieces it is made of: the entry point, the version's one
source, the pinned dependencies and the files the package needs at run time.
"""
import re
import subprocess
import sys
import tomllib
from fnmatch import fnmatch

import click

import charlm
import cli
from conftest import ROOT

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def _requirement_lines(name):
    """The requirement lines of a requirements file, comments and blank lines left out."""
    lines = [l.strip() for l in (ROOT / name).read_text().splitlines()]
    return [l for l in lines if l and not l.startswith("#")]


def test_the_charlm_command_is_what_cli_py_runs():
    target = PYPROJECT["project"]["scripts"]["charlm"]
    module, _, attr = target.partition(":")
    assert module in SETUPTOOLS["py-modules"] and (ROOT / f"{module}.py").is_file()
    assert getattr(cli, attr) is cli.run
    assert re.search(r'if __name__ == "__main__":\s+run\(\)\s*$', (ROOT / "cli.py").read_text())
    assert isinstance(cli.main, click.Group)
    assert {"train", "sample", "eval", "export", "datasets", "mirror"} <= set(cli.main.commands)


def test_version_has_one_source_and_both_commands_print_it():
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "charlm.__version__"}
    assert "version" in PYPROJECT["project"]["dynamic"] and "version" not in PYPROJECT["project"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", charlm.__version__)
    expected = f"charlm {charlm.__version__}"
    script = subprocess.run([sys.executable, "cli.py", "--version"], cwd=ROOT, capture_output=True,
                            text=True, timeout=60)
    assert (script.returncode, script.stdout.strip()) == (0, expected)
    # the console script calls cli.run with argv[0] = charlm; --version loads no TensorFlow
    code = ("import sys; sys.argv = ['charlm', '--version']\nfrom cli import run\n"
            "try:\n    run()\nexcept SystemExit as e:\n    print(e.code, 'tensorflow' in sys.modules)")
    entry = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert entry.stdout.splitlines() == [expected, "0 False"]


def test_install_and_development_read_the_same_pins():
    dynamic = PYPROJECT["tool"]["setuptools"]["dynamic"]["dependencies"]
    assert dynamic == {"file": ["requirements-runtime.txt"]}
    runtime = _requirement_lines("requirements-runtime.txt")
    # setuptools reads a dependency file as bare requirement lines: no options, no inline comments
    assert runtime and all(re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9A-Za-z.]*", l) for l in runtime)
    names = {l.split("==")[0].lower() for l in runtime}
    assert {"tensorflow", "numpy", "click"} <= names
    development = _requirement_lines("requirements.txt")
    assert "-r requirements-runtime.txt" in development
    pinned_twice = {l.split("==")[0].lower() for l in development if "==" in l} & names
    assert not pinned_twice, f"pinned in both files: {pinned_twice}"
    assert {"pytest", "hypothesis"} <= {l.split("==")[0].lower() for l in development if "==" in l}


def test_every_file_the_package_needs_is_packaged():
    include = SETUPTOOLS["packages"]["find"]["include"]
    package_data = SETUPTOOLS["package-data"]
    for path in sorted((ROOT / "charlm").rglob("*")):
        if "__pycache__" in path.parts or path.is_dir():
            continue
        package = ".".join(path.parent.relative_to(ROOT).parts)
        assert (path.parent / "__init__.py").is_file(), f"{path} is in no package"
        assert any(fnmatch(package, p) for p in include), f"package {package} is not installed"
        if path.suffix != ".py":
            assert any(fnmatch(path.name, g) for g in package_data.get(package, [])), \
                f"{path.relative_to(ROOT)} is not package data"
    from charlm.fast import kernels
    assert kernels.SOURCE.is_file() and kernels.SOURCE.parent == ROOT / "charlm" / "fast" / "kernels"
