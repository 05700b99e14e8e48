"""The packaging files agree: pyproject.toml states ranges, constraints.txt the tested set inside them,
and the Makefile (hence CI) and environment.yml install through that set."""

import ast
import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from importlib.metadata import version
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

import egpo_core

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]
MAKEFILE = (ROOT / "Makefile").read_text()
CONSTRAINT_LINES = (ROOT / "constraints.txt").read_text().splitlines()


def _requirements() -> list[Requirement]:
    listed = list(PROJECT["dependencies"])
    for extra in PROJECT["optional-dependencies"].values():
        listed += extra
    return [Requirement(r) for r in listed]


def _pins() -> dict[str, str]:
    """constraints.txt as {canonical name: version}."""
    pins = {}
    for line in CONSTRAINT_LINES:
        if line.startswith("#") or not line.strip():
            continue
        name, _, pinned = line.partition("==")
        pins[canonicalize_name(name)] = pinned
    return pins


def _make_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*:?=\s*(\S+)\s*$", MAKEFILE, re.M)
    assert match, f"the Makefile defines no {name}"
    return match.group(1)


def _environment_pip_lines() -> list[str]:
    lines = (ROOT / "environment.yml").read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip() == "- pip:")
    entries = []
    for line in lines[start + 1 :]:
        match = re.match(r"^\s+-\s+(.+?)\s*$", line)
        if not match:
            break
        entries.append(match.group(1))
    return entries


def _tested_python() -> str:
    """The "Python X.Y" that constraints.txt's header names."""
    header = " ".join(line for line in CONSTRAINT_LINES if line.startswith("#"))
    match = re.search(r"Python (\d+\.\d+)", header)
    assert match, "constraints.txt's header names no Python version"
    return match.group(1)


def test_constraints_are_exact_public_pins():
    # a local label (torch's "+cpu") or a URL would tie the set to one build or one machine
    lines = [line for line in CONSTRAINT_LINES if line and not line.startswith("#")]
    bad = [line for line in lines if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*==[0-9][0-9A-Za-z.!]*", line)]
    assert not bad, f"not of the form name==version: {bad}"
    assert "egpo" not in _pins(), "egpo itself does not belong in its constraints"


def test_constraints_name_each_package_once():
    names = [canonicalize_name(line.partition("==")[0]) for line in CONSTRAINT_LINES if line and not line.startswith("#")]
    assert len(names) == len(set(names)), sorted({n for n in names if names.count(n) > 1})


@pytest.mark.parametrize("requirement", _requirements(), ids=str)
def test_pyproject_states_a_range_and_the_tested_version_lies_in_it(requirement):
    operators = {spec.operator for spec in requirement.specifier}
    assert ">=" in operators and "==" not in operators, f"{requirement}: state a lower bound, not a pin"
    pinned = _pins().get(canonicalize_name(requirement.name))
    assert pinned is not None, f"{requirement.name} is required but constraints.txt has no version for it"
    assert requirement.specifier.contains(Version(pinned), prereleases=True), (
        f"constraints.txt tests {requirement.name}=={pinned}, outside pyproject's {requirement.specifier}"
    )


def test_requires_python_admits_the_tested_python_and_environment_yml_uses_it():
    tested = _tested_python()
    assert SpecifierSet(PROJECT["requires-python"]).contains(f"{tested}.0")
    assert re.search(rf"^\s+-\s+python={re.escape(tested)}\s*$", (ROOT / "environment.yml").read_text(), re.M)


def test_environment_yml_installs_every_extra_through_the_constraints():
    extras = ",".join(PROJECT["optional-dependencies"])
    assert _environment_pip_lines() == ["-c constraints.txt", f"-e .[{extras}]"]


def test_makefile_installs_torch_first_and_everything_through_the_constraints():
    assert _make_variable("CONSTRAINTS") == "constraints.txt"
    assert _make_variable("EXTRAS") == ",".join(PROJECT["optional-dependencies"])
    installs = [line.strip() for line in MAKEFILE.splitlines() if "$(PY) -m pip install" in line and "--upgrade pip" not in line]
    assert installs, "the Makefile installs nothing"
    assert all("-c $(CONSTRAINTS)" in line for line in installs), installs
    assert installs[0].endswith(" torch"), f"torch is not installed first: {installs[0]}"
    assert installs[-1].endswith('-e ".[$(EXTRAS)]"'), installs[-1]


def test_makefile_reinstalls_when_the_ranges_or_the_tested_set_change():
    match = re.search(r"^\$\(STAMP\):(.*)$", MAKEFILE, re.M)
    assert match and set(match.group(1).split()) >= {"pyproject.toml", "$(CONSTRAINTS)"}, match


def test_ci_runs_the_makefile_tests_and_the_slow_ones():
    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^make test\s*$", ci, re.M) and re.search(r"^make test-slow\s*$", ci, re.M), ci
    assert 'pytest -q -m "not slow"' in MAKEFILE and "pytest -q -m slow" in MAKEFILE


def test_version_is_written_once_and_installed():
    assert "version" in PROJECT["dynamic"] and "version" not in PROJECT
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "egpo_core.__version__"}
    # a stale editable install (make setup not rerun after a bump) would report the old version
    assert version("egpo") == egpo_core.__version__


def test_license_file_matches_pyproject_and_changelog_has_this_version():
    assert PROJECT["license"] == "MIT" and PROJECT["license-files"] == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().startswith("MIT License\n")
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert re.search(rf"^## \[{re.escape(egpo_core.__version__)}\]", changelog, re.M)


def test_notebooks_extra_installs_jupyterlab_widgets_and_jupytext():
    names = {canonicalize_name(Requirement(r).name) for r in PROJECT["optional-dependencies"]["notebooks"]}
    assert {"jupyterlab", "ipywidgets", "jupytext", "ipykernel"} <= names


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _get(url: str, token: str, method: str = "GET", body: dict | None = None) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        "Authorization": f"token {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return response.status, response.read()


def _notebook_sources() -> list[Path]:
    """The notebooks: the percent-format sources of notebooks/ (plain modules there have no ``# %%`` line)."""
    return sorted(p for p in (ROOT / "notebooks").glob("*.py") if re.search(r"^# %%", p.read_text(), re.M))


#: The settings jupyter-config/ gives JupyterLab: plugin id → setting → value served as its default.
LAB_DEFAULTS = {
    "@jupyterlab/docmanager-extension:plugin": {"defaultViewers": {"python": "Jupytext Notebook"}},
    "@jupyterlab/apputils-extension:notification": {"fetchNews": "false"},
}


@contextlib.contextmanager
def _make_lab(home: Path):
    """`make lab`'s own command (read with make -n, the setup taken as done) running on a free loopback port,
    with the user config, settings, runtime and workspace folders under ``home`` (``home/config`` is the
    user's ~/.jupyter): yields (base URL, token). Stopped (its whole process group) on exit."""
    port, token = _free_port(), secrets.token_hex(16)
    extra = "--no-browser" + (" --allow-root" if os.geteuid() == 0 else "")
    recipe = subprocess.run(
        ["make", "-s", "-n", "-o", ".venv/.installed", "lab", f"LAB_PORT={port}", f"LAB_ARGS={extra}"],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout
    assert "--ServerApp.ip=127.0.0.1" in recipe and "/lab/tree/notebooks" in recipe, recipe
    env = dict(os.environ, JUPYTER_RUNTIME_DIR=str(home / "runtime"), JUPYTER_CONFIG_DIR=str(home / "config"),
               JUPYTERLAB_WORKSPACES_DIR=str(home / "workspaces"), JUPYTERLAB_SETTINGS_DIR=str(home / "settings"))
    command = f"{recipe.strip()} --IdentityProvider.token={token}"
    log_path = home / "lab.log"
    with open(log_path, "w") as log:
        server = subprocess.Popen(["bash", "-c", command], cwd=ROOT, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                _get(f"{base}/api/status", token)
                break
            except OSError:
                assert server.poll() is None, log_path.read_text()[-2000:]
                assert time.monotonic() < deadline, "JupyterLab did not answer within 90 s"
                time.sleep(0.5)
        yield base, token
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # the whole session: bash and the server it started
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """`make lab` with an empty user config: (base URL, token, home), one server for the module."""
    home = tmp_path_factory.mktemp("lab")
    with _make_lab(home) as (base, token):
        yield base, token, home


def _served_default(base: str, token: str, plugin: str, key: str):
    """The default JupyterLab serves for one setting (the schema's, after every override)."""
    return json.loads(_get(f"{base}/lab/api/settings/{plugin}", token)[1])["schema"]["properties"][key]["default"]


def test_make_lab_serves_the_notebooks_with_the_venv_kernel_and_jupytext(lab):
    """/lab answers, the kernel is this interpreter, and a percent-format source opens as a notebook."""
    base, token, _ = lab
    status, page = _get(f"{base}/lab/tree/notebooks", token)
    assert status == 200 and b"JupyterLab" in page
    specs = json.loads(_get(f"{base}/api/kernelspecs", token)[1])
    assert specs["default"] == "python3"
    spec = specs["kernelspecs"]["python3"]["spec"]
    assert Path(spec["argv"][0]).resolve() == Path(sys.executable).resolve()
    # what JupyterLab writes into a notebook it saves is what the sources' headers hold (opening one, whose
    # autosave follows, leaves its .py unchanged)
    notebook_spec = {"name": "python3", "display_name": spec["display_name"], "language": spec["language"]}
    for source in _notebook_sources():
        header = re.search(r"^#   kernelspec:\n((?:#     .*\n)+)", source.read_text(), re.M).group(1)
        assert dict(re.findall(r"^#     (\w+): (.*)$", header, re.M)) == notebook_spec, source.name
    for source in _notebook_sources():
        # as the Jupytext Notebook viewer asks for it, and as a plain request gets it
        for query in ("type=notebook&content=1", "content=1"):
            model = json.loads(_get(f"{base}/api/contents/notebooks/{source.name}?{query}", token)[1])
            assert model["type"] == "notebook" and model["content"]["cells"], (source.name, query)


def test_make_lab_opens_notebooks_as_notebooks_and_asks_no_news(lab):
    """The settings JupyterLab serves (defaults after the config path's overrides) make Jupytext Notebook the
    default viewer of .py files and never fetch news (no first-start prompt); jupyter-config/ is what says so,
    and nothing was written to the user's config folder."""
    base, token, home = lab
    for plugin, settings in LAB_DEFAULTS.items():
        raw = json.loads(_get(f"{base}/lab/api/settings/{plugin}", token)[1])["raw"]
        for key, value in settings.items():
            assert _served_default(base, token, plugin, key) == value, (plugin, key)
            assert key not in json.loads(raw or "{}")  # the default, not a user setting
    overrides = json.loads((ROOT / "jupyter-config" / "labconfig" / "default_setting_overrides.json").read_text())
    assert overrides == LAB_DEFAULTS
    assert not (home / "config" / "labconfig").exists()


def test_make_lab_runs_a_notebook_in_its_folder_where_the_shared_setup_imports(lab):
    """The kernel JupyterLab starts for a notebook (a session for notebooks/<name>.py, as opening it does)
    runs in notebooks/, so the import cell's ``from _setup import show, start`` finds the notebooks' shared
    start there."""
    from jupyter_client import BlockingKernelClient

    base, token, home = lab
    source = _notebook_sources()[0]
    session = json.loads(_get(f"{base}/api/sessions", token, "POST", {
        "path": f"notebooks/{source.name}", "name": source.name, "type": "notebook",
        "kernel": {"name": "python3"}})[1])
    client = BlockingKernelClient()
    try:
        client.load_connection_file(str(home / "runtime" / f"kernel-{session['kernel']['id']}.json"))
        client.start_channels(iopub=False, stdin=False, hb=False)  # the reply alone: queued until the kernel is up
        request = client.execute("import os\nfrom _setup import show, start\nimport _setup", user_expressions={
            "cwd": "os.getcwd()", "module": "_setup.__file__"})
        reply = client.get_shell_msg(timeout=120)
        while reply["parent_header"].get("msg_id") != request:
            reply = client.get_shell_msg(timeout=120)
        assert reply["content"]["status"] == "ok", reply["content"]
        seen = {k: ast.literal_eval(v["data"]["text/plain"]) for k, v in reply["content"]["user_expressions"].items()}
        assert Path(seen["cwd"]).resolve() == ROOT / "notebooks"
        assert Path(seen["module"]).resolve() == ROOT / "notebooks" / "_setup.py"
    finally:
        client.stop_channels()
        _get(f"{base}/api/sessions/{session['id']}", token, "DELETE")


def _browser() -> str | None:
    """A Chromium-family browser on PATH (none on CI machines), or None."""
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.skipif(_browser() is None, reason="no Chromium-family browser on PATH")
def test_make_lab_shows_a_notebook_url_as_cells_in_a_browser(lab, tmp_path):
    """Headless Chromium opens /lab/tree/notebooks/<notebook>.py: the page holds a notebook panel whose
    first markdown cell is rendered (its title as a heading), no text editor, no raw ``# %%`` marker, and no
    news prompt. (Before jupyter-config/ it held a file editor showing the source, and the prompt.)"""
    base, token, _ = lab
    source = _notebook_sources()[0]
    title = re.search(r"^# # (.+)$", source.read_text(), re.M).group(1)
    # JupyterLab makes a checkpoint of a document it opens (root_dir is the repository): remove what it adds
    checkpoints = source.parent / ".ipynb_checkpoints"
    ours = checkpoints if not checkpoints.exists() else checkpoints / f"{source.stem}-checkpoint{source.suffix}"
    existed = ours.exists()
    try:
        dom = subprocess.run(
            [_browser(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
             "--window-size=1280,900", "--virtual-time-budget=20000", "--dump-dom",
             f"{base}/lab/tree/notebooks/{source.name}?token={token}"],
            capture_output=True, text=True, timeout=180,
        ).stdout
    finally:
        if not existed and ours.is_dir():
            shutil.rmtree(ours)
        elif not existed and ours.exists():
            ours.unlink()
    editor = bool(re.search(r'class="[^"]*\bjp-FileEditor\b', dom))
    assert re.search(r'class="[^"]*\bjp-NotebookPanel\b', dom), f"no notebook on the page (a text editor: {editor})"
    headings = [re.sub(r"<[^>]+>", "", h).strip() for h in re.findall(r"<h1[^>]*>(.*?)</h1>", dom, re.S)]
    assert f"{title}¶" in headings, f"{title!r} is not rendered as a heading: {headings}"
    assert not editor and "%% [markdown]" not in dom
    assert "Jupyter news" not in dom
