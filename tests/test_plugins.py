"""The plugin host: discovery switches, fault isolation, phase hooks and wrappers."""

import inspect
import subprocess
import sys
import types

import pytest

import gscore
from gscore import hookimpl, hookspecs
from gscore.algorithm import Algorithm
from gscore.errors import PluginLoadError


class Recorder(Algorithm):
    """Records which phases ran."""

    def apply_phase(self):
        return "calibrate"

    def convert_phase(self):
        return "quantize"

    def calibrate(self, network, network_helper=None, datasets=None):
        network.append(("calibrate", network_helper, datasets))
        return network

    def quantize(self, network):
        network.append(("quantize",))
        return network


def test_every_hook_is_documented_in_one_line():
    for name in hookspecs.PHASE_HOOKS + ("gscore_register_algorithms",):
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and len(doc.splitlines()) == 1, name
    specs = [n for n in dir(hookspecs) if n.startswith("gscore_")]
    assert sorted(specs) == sorted(hookspecs.PHASE_HOOKS + ("gscore_register_algorithms",))


def test_importing_gscore_discovers_nothing_and_imports_no_mindspore():
    code = (
        "import sys, gscore, gscore.plugins as p;"
        "assert p._host is None;"
        "assert 'mindspore' not in sys.modules and 'mindformers' not in sys.modules;"
        "gscore.algorithms();"
        "assert 'mindspore' not in sys.modules, 'listing imported mindspore'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_installed_rtn_is_found(gscore_host):
    names = {info.name: info for info in gscore.algorithms()}
    assert names["rtn"].source.distribution == "gscore-rtn"
    assert gscore.get("RoundToNearest") is names["rtn"].cls


def test_disable_switch_skips_a_plugin(monkeypatch, gscore_host):
    monkeypatch.setenv("GSCORE_DISABLE_PLUGINS", "rtn")
    gscore.plugins.reset_host()
    with pytest.raises(gscore.UnknownAlgorithmError, match="no gscore algorithm named 'rtn'"):
        gscore.get("rtn")
    assert "rtn" in gscore.plugins.host().skipped


def test_phase_hooks_run_default_then_wrappers_see_them(register_inline_plugin):
    calls = []

    class Observer:
        @hookimpl(wrapper=True)
        def gscore_calibrate(self, algorithm, network, network_helper, datasets):
            calls.append("before")
            result = yield
            calls.append(("after", len(result)))
            return result

    register_inline_plugin(Observer(), "observer")
    algo = Recorder()
    net = algo.convert(algo.apply([], network_helper="helper", datasets="data"))
    assert net == [("calibrate", "helper", "data"), ("quantize",)]
    assert calls == ["before", ("after", 1)]
    assert [r.phase for r in algo.phase_records] == ["calibrate", "quantize"]
    assert all(r.seconds >= 0 and r.peak_rss_mib > 0 for r in algo.phase_records)


def test_a_plugin_can_answer_a_phase_before_the_default_for_what_it_declares(register_inline_plugin):
    class Shortcut:
        @hookimpl
        @gscore.answers_for(Recorder)
        def gscore_quantize(self, algorithm, network):
            return ["answered by shortcut"]

    register_inline_plugin(Shortcut(), "shortcut")
    assert Recorder().convert([]) == ["answered by shortcut"]


def test_a_plugin_failing_to_register_is_isolated(register_inline_plugin, gscore_host):
    broken = types.SimpleNamespace()

    @hookimpl
    def gscore_register_algorithms(registry):
        registry.add(Recorder, name="half-registered")
        raise RuntimeError("boom")

    broken.gscore_register_algorithms = gscore_register_algorithms
    register_inline_plugin(broken, "broken")
    assert any("boom" in str(f) for f in gscore_host.failures)
    with pytest.raises(gscore.UnknownAlgorithmError, match="broken .*boom"):
        gscore.get("half-registered")
    assert gscore.get("rtn")


def test_strict_mode_raises_on_a_failing_plugin(monkeypatch, register_inline_plugin, gscore_host):
    monkeypatch.setattr(gscore_host, "strict", True)
    bad = types.SimpleNamespace(gscore_register_algorithms=hookimpl(lambda registry: 1 / 0))
    with pytest.raises(PluginLoadError, match="ZeroDivisionError"):
        register_inline_plugin(bad, "bad")
