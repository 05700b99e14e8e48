"""The dependency lists agree: pyproject.toml (pip), environment.yml (conda) and the Makefile's torch pin."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = set(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        reqs |= set(extra)
    return reqs


def _environment_pip_requirements() -> set[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    reqs = set()
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+-\s+(\S+)\s*$", line)
        if not match:
            break
        reqs.add(match.group(1))
    return reqs


def test_environment_yml_matches_pyproject():
    pyproject, environment = _pyproject_requirements(), _environment_pip_requirements()
    assert pyproject == environment, {
        "only in pyproject.toml": sorted(pyproject - environment),
        "only in environment.yml": sorted(environment - pyproject),
    }


def test_every_requirement_is_pinned():
    unpinned = [r for r in _pyproject_requirements() if "==" not in r]
    assert not unpinned, f"unpinned requirements: {unpinned}"


def test_makefile_installs_the_pinned_torch_first():
    makefile = (ROOT / "Makefile").read_text()
    torch_pin = next(r for r in _pyproject_requirements() if r.startswith("torch=="))
    first_install = makefile.index("pip install")
    assert makefile.index(torch_pin) < makefile.index('-e ".[', first_install)


def test_environment_names_python_311():
    assert re.search(r"^\s+-\s+python=3\.11\s*$", (ROOT / "environment.yml").read_text(), re.M)
