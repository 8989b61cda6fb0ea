"""Real third-party plugin packages, built and pip-installed into a temporary folder.

Each package has its own pyproject and entry point in group ``gscore``; a subprocess with
that folder on ``PYTHONPATH`` then sees them exactly as an installed user would.
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


def _package(root: Path, dist: str, module: str, source: str) -> Path:
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
            {module.removeprefix("gscore_")} = "{module}"

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
    ]
    target = root / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--target", str(target), *map(str, packages)],
        check=True,
    )
    return target


def _run(site: Path, code: str, **env: str) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "PYTHONPATH": str(site), **env}
    full_env.pop("GSCORE_DISABLE_PLUGINS", None)
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


def test_two_plugins_claiming_one_name_is_an_error_naming_both(site):
    result = _run(site, "import gscore; gscore.get('rtn')")
    assert "AlgorithmConflictError" in result.stderr
    assert "gscore-rtn" in result.stderr and "gscore-claims-rtn" in result.stderr
    assert _run(site, "import gscore; gscore.get('toy')").returncode == 0


def test_autoload_switch_keeps_only_first_party_plugins(site):
    code = "import gscore; print(sorted(i.name for i in gscore.algorithms())); print(gscore.plugin_failures())"
    result = _run(site, code, GSCORE_DISABLE_PLUGIN_AUTOLOAD="1")
    assert result.returncode == 0, result.stderr
    names, failures = result.stdout.splitlines()
    assert "rtn" in names and "toy" not in names and "broken" not in failures
    assert failures == "[]"


def test_strict_switch_turns_a_broken_plugin_into_an_error(site):
    result = _run(site, "import gscore; gscore.get('toy')", GSCORE_STRICT_PLUGINS="1")
    assert result.returncode != 0 and "PluginLoadError" in result.stderr
