"""Real third-party plugin packages, installed into a temporary folder.

Each package has its own distribution and entry point in group ``gscore``; a subprocess with
that folder on ``PYTHONPATH`` then sees them exactly as an installed user would. The good
package is built and installed by pip; the others are written in the installed form pip
would leave (the module and a ``.dist-info`` folder with ``METADATA`` and
``entry_points.txt``), because building each one costs seconds on a busy machine.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

GOOD = '''
"""A toy third-party algorithm."""
import gscore

GSCORE_API_VERSION = gscore.API_VERSION


class Toy(gscore.Algorithm):
    """Toy: doubles every element of a list in its quantize phase."""

    def apply_phase(self):
        return None

    def convert_phase(self):
        return "quantize"

    def quantize(self, network):
        return [2 * x for x in network]


@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(Toy, name="toy", aliases=["ToyAlgo"])
'''

BROKEN = '''
raise ImportError("gscore_broken needs a library that is not installed")
'''

OLD_API = '''
import gscore
GSCORE_API_VERSION = 0

@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(object, name="old")
'''

CLAIMS_RTN = '''
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

class NotRtn(gscore.Algorithm):
    """Claims the name rtn."""

@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(NotRtn, name="rtn")
'''

CLAIMS_TOY = '''
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

class OtherToy(gscore.Algorithm):
    """Claims the name toy, as gscore-toy does."""

@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(OtherToy, name="toy")
'''

EXITS_AT_IMPORT = '''
import sys
sys.exit("gscore_exits refuses to load")
'''

EXITS_AT_REGISTER = '''
import sys
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

@gscore.hookimpl
def gscore_register_algorithms(registry):
    sys.exit(3)
'''

FORK_NAMED_RTN = '''
"""An unrelated plugin whose entry point happens to be called rtn."""
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

class Fork(gscore.Algorithm):
    """A fork under its own name."""

    def apply_phase(self):
        return None

    def convert_phase(self):
        return None

@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(Fork, name="rtn-fork")
'''

ANSWERS_42 = '''
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

class Greedy(gscore.Algorithm):
    """Its plugin answers every quantize phase with 42."""

    def apply_phase(self):
        return None

    def convert_phase(self):
        return "quantize"

    def quantize(self, network):
        return network

@gscore.hookimpl
def gscore_register_algorithms(registry):
    registry.add(Greedy, name="greedy")

@gscore.hookimpl
def gscore_quantize(algorithm, network):
    return 42
'''

MISSPELLED = '''
import gscore
GSCORE_API_VERSION = gscore.API_VERSION

@gscore.hookimpl
def gscore_quantise(algorithm, network):
    return network
'''


def _package(root: Path, dist: str, module: str, source: str, entry_point: str = "") -> Path:
    folder = root / dist
    folder.mkdir()
    (folder / f"{module}.py").write_text(textwrap.dedent(source))
    (folder / "pyproject.toml").write_text(
        textwrap.dedent(
            f"""
            [build-system]
            requires = ["setuptools>=64"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "{dist}"
            version = "1.2.3"

            [project.entry-points.gscore]
            {entry_point or module.removeprefix("gscore_")} = "{module}"

            [tool.setuptools]
            py-modules = ["{module}"]
            """
        )
    )
    return folder


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("plugins")
    packages = [
        _package(root, "gscore-toy", "gscore_toy", GOOD),
        _package(root, "gscore-broken", "gscore_broken", BROKEN),
        _package(root, "gscore-old", "gscore_old", OLD_API),
        _package(root, "gscore-claims-rtn", "gscore_claimsrtn", CLAIMS_RTN),
        _package(root, "gscore-toy-clone", "gscore_toyclone", CLAIMS_TOY),
        _package(root, "gscore-exits", "gscore_exits", EXITS_AT_IMPORT),
        _package(root, "gscore-exits-late", "gscore_exitslate", EXITS_AT_REGISTER),
        _package(root, "gscore-rtn-fork", "gscore_rtnfork", FORK_NAMED_RTN, entry_point="rtn"),
        _package(root, "gscore-greedy", "gscore_greedy", ANSWERS_42),
        _package(root, "gscore-misspelled", "gscore_misspelled", MISSPELLED),
    ]
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), str(packages[0])],
        check=True,
    )
    for folder in packages[1:]:
        _install_unbuilt(folder, target)
    return target


def _install_unbuilt(folder: Path, target: Path) -> None:
    """Install a one-module package from :func:`_package` the way pip lays it out."""
    import tomllib

    project = tomllib.loads((folder / "pyproject.toml").read_text())["project"]
    (module,) = folder.glob("*.py")
    (target / module.name).write_text(module.read_text())
    info = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    points = "".join(f"{name} = {value}\n" for name, value in project["entry-points"]["gscore"].items())
    (info / "entry_points.txt").write_text(f"[gscore]\n{points}")


def _run(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")]))}
    full_env.pop("GSCORE_DISABLE_PLUGINS", None)
    full_env.update(env)
    return subprocess.run([sys.executable, "-c", code], env=full_env, capture_output=True, text=True, check=False)


def test_get_finds_an_installed_third_party_plugin(site):
    result = _run(site, "import gscore; T = gscore.get('toy_algo'); print(T.__module__, T().convert([1, 2]))")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gscore_toy", "[2,", "4]"]


def test_list_shows_it_and_isolates_the_broken_ones(site):
    result = _run(site, "from gscore.cli import main; main(['list'])")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "toy" in out and "gscore-toy 1.2.3" in out and "Toy: doubles" in out
    assert "rtn" in out and "gscore-rtn" in out
    assert "FAILED broken (gscore-broken): import failed: ImportError: gscore_broken needs a library" in out
    assert "FAILED old (gscore-old): written for gscore API version 0" in out


def test_unknown_name_error_mentions_the_broken_plugin(site):
    result = _run(site, "import gscore; gscore.get('brokn')")
    assert result.returncode != 0
    assert "UnknownAlgorithmError" in result.stderr and "broken (gscore-broken)" in result.stderr


def test_a_third_party_plugin_cannot_take_a_first_party_name(site):
    code = "import gscore; print(gscore.get('rtn').__module__); print(*gscore.plugin_failures(), sep='\\n')"
    result = _run(site, code)
    assert result.returncode == 0, result.stderr
    module, *failures = result.stdout.splitlines()
    assert module == "gscore_rtn"
    refused = [f for f in failures if f.startswith("claimsrtn (gscore-claims-rtn)")]
    assert len(refused) == 1 and "registration refused" in refused[0] and "'rtn' of gscore-rtn" in refused[0]
    assert not any("(gscore-rtn)" in f for f in failures)


def test_two_third_party_plugins_claiming_one_name_is_an_error_naming_both(site):
    result = _run(site, "import gscore; gscore.get('toy')")
    assert "AlgorithmConflictError" in result.stderr
    assert "gscore-toy " in result.stderr and "gscore-toy-clone" in result.stderr
    listing = _run(site, "from gscore.cli import main; main(['list'])").stdout
    assert "FAILED toyclone (gscore-toy-clone): algorithm name 'toy' is also registered by gscore-toy 1.2.3" in listing
    assert _run(site, "import gscore; gscore.get('toy_algo')").returncode == 0


def test_system_exit_in_a_plugin_is_a_recorded_failure(site):
    result = _run(site, "import gscore; print(*gscore.plugin_failures(), sep='\\n'); print(gscore.get('toy_algo').__name__)")
    assert result.returncode == 0, result.stderr
    assert "exits (gscore-exits): import failed: SystemExit: gscore_exits refuses to load" in result.stdout
    assert "exitslate (gscore-exits-late): gscore_register_algorithms raised SystemExit: 3" in result.stdout
    assert result.stdout.splitlines()[-1] == "Toy"


def test_an_entry_point_named_like_a_first_party_one_takes_nothing_over(site):
    code = "import gscore; print(gscore.get('rtn').__module__, gscore.get('rtn-fork').__module__)"
    result = _run(site, code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["gscore_rtn", "gscore_rtnfork"]


def test_a_phase_hook_answers_only_for_its_own_algorithms_and_is_checked(site):
    code = "import gscore; print(gscore.get('toy_algo')().convert([1, 2])); gscore.get('greedy')().convert([1])"
    result = _run(site, code)
    assert result.stdout.strip() == "[2, 4]"
    assert "PhaseAnswerError: gscore_quantize for Greedy answered int (42), not a network (a list, like the one given)" in result.stderr
    assert "'greedy' (gscore-greedy 1.2.3)" in result.stderr


def test_a_misspelled_hook_is_refused_at_registration(site):
    result = _run(site, "import gscore; print(*gscore.plugin_failures(), sep='\\n')")
    assert "misspelled (gscore-misspelled): registration refused: it implements unknown hook(s) 'gscore_quantise' (did you mean 'gscore_quantize'?)" in result.stdout


def test_autoload_switch_keeps_only_first_party_plugins(site):
    code = "import gscore; print(sorted(i.name for i in gscore.algorithms())); print(gscore.plugin_failures())"
    result = _run(site, code, GSCORE_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    names, failures = result.stdout.splitlines()
    assert "rtn" in names and "toy" not in names and "broken" not in failures
    assert failures == "[]"


def test_strict_switch_turns_a_broken_plugin_into_an_error(site):
    result = _run(site, "import gscore; gscore.get('toy_algo')", GSCORE_STRICT_PLUGINS="1")
    assert result.returncode != 0 and "PluginLoadError" in result.stderr


def test_strict_switch_refuses_a_name_conflict(site):
    disable = "broken,old,exits,exitslate,misspelled,claimsrtn"
    result = _run(site, "import gscore; gscore.get('toy_algo')", GSCORE_STRICT_PLUGINS="1", GSCORE_DISABLE_PLUGINS=disable)
    assert result.returncode != 0
    assert "PluginLoadError: toyclone (gscore-toy-clone): algorithm name 'toy' is also registered by gscore-toy" in result.stderr
    result = _run(site, "import gscore; gscore.get('toy_algo')", GSCORE_STRICT_PLUGINS="1", GSCORE_DISABLE_PLUGINS=disable.replace("claimsrtn", "GSCORE_TOY_CLONE"))
    assert "PluginLoadError: claimsrtn (gscore-claims-rtn): registration refused" in result.stderr
