"""The plugin boundary (issue 9, items 3 and 6), in-process: what a plugin can no longer do.

No plugin ends the program (any BaseException but KeyboardInterrupt is a recorded failure),
takes over a first-party name, answers phases of algorithms it does not handle, returns
something that is not a network, or hides a misspelled hook. The env switches say what they
did. (Installed third-party packages doing the same are in test_third_party_plugins.py.)
"""

from __future__ import annotations

import re
import sys
import types

import pytest

import gscore
from gscore import ConfigError, GscoreWarning, PhaseAnswerError, PluginLoadError, UnknownAlgorithmError, hookimpl
from gscore.algorithm import Algorithm
from gscore.plugins import PluginHost


class Listy(Algorithm):
    """Works on plain lists: quantize appends a marker."""

    def apply_phase(self):
        return None

    def convert_phase(self):
        return "quantize"

    def quantize(self, network):
        return network + ["quantized"]


def registering(*entries, raises: BaseException | None = None):
    """A plugin object whose gscore_register_algorithms adds ``entries`` ``(cls, name)`` then maybe raises."""

    @hookimpl
    def gscore_register_algorithms(registry):
        for cls, name in entries:
            registry.add(cls, name=name)
        if raises is not None:
            raise raises

    return types.SimpleNamespace(gscore_register_algorithms=gscore_register_algorithms)


@pytest.mark.parametrize("error", [SystemExit(3), SystemExit("bye"), GeneratorExit(), Exception("boom")])
def test_any_base_exception_but_keyboard_interrupt_at_registration_is_a_recorded_failure(register_inline_plugin, gscore_host, error):
    register_inline_plugin(registering((Listy, "listy"), raises=error), "raiser")
    assert any(f.plugin == "raiser" and type(error).__name__ in f.error for f in gscore_host.failures)
    with pytest.raises(UnknownAlgorithmError):
        gscore.get("listy")  # nothing of a failed plugin stays registered
    assert gscore.get("rtn")


def test_keyboard_interrupt_at_registration_goes_through(register_inline_plugin, gscore_host):
    plugin = registering(raises=KeyboardInterrupt())
    with pytest.raises(KeyboardInterrupt):
        register_inline_plugin(plugin, "interrupted")
    assert not gscore_host.pm.is_registered(plugin)


def test_a_third_party_plugin_registering_a_first_party_name_is_refused_whole(register_inline_plugin, gscore_host):
    class Evil(Listy):
        """Claims rtn."""

    class Decoy:
        @hookimpl
        def gscore_quantize(self, algorithm, network):
            return 42

    plugin = registering((Listy, "harmless"), (Evil, "RoundToNearest"))
    plugin.gscore_quantize = Decoy().gscore_quantize
    register_inline_plugin(plugin, "evil", distribution="evil-dist")
    assert gscore.get("rtn").__module__ == "gscore_rtn"
    (failure,) = [f for f in gscore_host.failures if f.plugin == "evil"]
    assert "registration refused" in failure.error and "'roundtonearest' of gscore-rtn" in failure.error
    assert not gscore_host.pm.is_registered(plugin)
    with pytest.raises(UnknownAlgorithmError):
        gscore.get("harmless")


def test_a_first_party_entry_point_name_is_reserved_even_if_that_plugin_failed(register_inline_plugin, gscore_host):
    gscore_host.registry._by_key.pop("ptq")  # as if gscore-ptq had failed to import
    register_inline_plugin(registering((Listy, "ptq")), "impostor", distribution="impostor-dist")
    assert any(f.plugin == "impostor" and "'ptq' of gscore-ptq" in f.error for f in gscore_host.failures)


def test_two_third_party_plugins_sharing_a_name_are_a_recorded_conflict(register_inline_plugin, gscore_host, monkeypatch):
    register_inline_plugin(registering((Listy, "shared")), "first", distribution="dist-one")
    register_inline_plugin(registering((Listy, "shared")), "second", distribution="dist-two")
    assert any(f.plugin == "second" and "'shared' is also registered by dist-one" in f.error for f in gscore_host.failures)
    with pytest.raises(gscore.AlgorithmConflictError, match="dist-one.*dist-two"):
        gscore.get("shared")
    monkeypatch.setattr(gscore_host, "strict", True)
    with pytest.raises(PluginLoadError, match="'shared' is also registered by dist-one"):
        register_inline_plugin(registering((Listy, "shared")), "third", distribution="dist-three")


def test_a_phase_hook_answers_only_for_algorithms_its_plugin_handles(register_inline_plugin):
    calls = []

    class Everything:
        @hookimpl
        def gscore_quantize(self, algorithm, network):
            calls.append(type(algorithm).__name__)
            return ["hijacked"]

    register_inline_plugin(Everything(), "everything")
    assert Listy().convert([]) == ["quantized"] and calls == []

    class Declared:
        @hookimpl
        @gscore.answers_for("declared-listy")
        def gscore_quantize(self, algorithm, network):
            return ["answered"]

    class DeclaredListy(Listy):
        """Registered so the declaration can name it."""

    register_inline_plugin(registering((DeclaredListy, "declared-listy")), "owner")
    register_inline_plugin(Declared(), "declared")
    assert DeclaredListy().convert([]) == ["answered"] and Listy().convert([]) == ["quantized"]


def test_a_phase_answer_that_is_not_a_network_names_the_plugin(register_inline_plugin):
    class FortyTwo:
        @hookimpl
        @gscore.answers_for(Listy)
        def gscore_quantize(self, algorithm, network):
            return 42

    register_inline_plugin(FortyTwo(), "forty-two", distribution="dist-42")
    with pytest.raises(PhaseAnswerError, match=r"gscore_quantize for Listy answered int \(42\), not a network \(a list, like the one given\).*'forty-two' \(dist-42 0\)"):
        Listy().convert([])


def test_a_wrapper_that_changes_the_answer_is_named_too(register_inline_plugin):
    class Spoiler:
        @hookimpl(wrapper=True)
        def gscore_quantize(self, algorithm, network):
            yield
            return "not a network"

    register_inline_plugin(Spoiler(), "spoiler")
    with pytest.raises(PhaseAnswerError, match=r"answered str .*Listy.quantize\(\) or from a plugin that answers or wraps this phase: 'spoiler'"):
        Listy().convert([])


def test_an_algorithm_method_returning_no_network_is_named(gscore_host):
    class Forgetful(Listy):
        def quantize(self, network):
            network.append("quantized")  # and forgets to return it

    with pytest.raises(PhaseAnswerError, match=r"Forgetful.quantize\(\) returned NoneType \(None\), not a network"):
        Forgetful().convert([])


def test_mindspore_networks_must_be_answered_with_a_cell(register_inline_plugin):
    from gscore.testing.fuzz import FuzzMLP

    class Numbers:
        @hookimpl
        @gscore.answers_for("rtn")
        def gscore_calibrate(self, algorithm, network, network_helper, datasets):
            return [1, 2]

    register_inline_plugin(Numbers(), "numbers")
    with pytest.raises(PhaseAnswerError, match=r"answered list .*not a network \(mindspore.nn.Cell\)"):
        gscore.get("rtn")().apply(FuzzMLP((4, 2)))


@pytest.mark.parametrize(
    "plugin, message",
    [
        (types.SimpleNamespace(gscore_quantise=hookimpl(lambda algorithm, network: network)), r"unknown hook\(s\) 'gscore_quantise' \(did you mean 'gscore_quantize'\?\)"),
        (types.SimpleNamespace(gscore_quantize=lambda algorithm, network: network), "gscore_quantize is defined without @gscore.hookimpl"),
        (types.SimpleNamespace(gscore_quantize=hookimpl(lambda algo, network: network)), "registration failed: PluginValidationError"),
    ],
)
def test_misspelled_unmarked_or_mis_signed_hooks_are_refused(register_inline_plugin, gscore_host, plugin, message):
    register_inline_plugin(plugin, "sloppy")
    errors = [f.error for f in gscore_host.failures if f.plugin == "sloppy"]
    assert len(errors) == 1 and re.search(message, errors[0]), errors
    assert not gscore_host.pm.is_registered(plugin)


@pytest.mark.parametrize("bad", [dict, Listy(), "nota path", object])
def test_registering_something_else_than_an_algorithm_class_is_a_recorded_failure(register_inline_plugin, gscore_host, bad):
    register_inline_plugin(registering((bad, "bad")), "adds-junk")
    assert any(f.plugin == "adds-junk" and "expects a gscore.Algorithm subclass" in f.error for f in gscore_host.failures)


@pytest.mark.parametrize("spelling", ["rtn", "RTN", "gscore-rtn", "GSCORE_RTN", " Gscore_Rtn "])
def test_disabling_a_plugin_ignores_case_and_separators_and_takes_distribution_names(monkeypatch, gscore_host, spelling):
    monkeypatch.setenv("GSCORE_DISABLE_PLUGINS", spelling)
    gscore.plugins.reset_host()
    with pytest.raises(UnknownAlgorithmError):
        gscore.get("rtn")
    assert "rtn" in gscore.plugins.host().skipped


def test_disabling_a_plugin_that_does_not_exist_warns(monkeypatch, gscore_host):
    monkeypatch.setenv("GSCORE_DISABLE_PLUGINS", "rtn,rnt")
    gscore.plugins.reset_host()
    with pytest.warns(GscoreWarning, match=r"GSCORE_DISABLE_PLUGINS names \['rnt'\], which match no installed gscore plugin"):
        gscore.plugins.host()


@pytest.mark.parametrize("value, first_party_only", [("1", True), ("yes", True), ("ON", True), ("0", False), ("off", False), ("", False)])
def test_switch_values(monkeypatch, value, first_party_only):
    monkeypatch.setenv("GSCORE_DISABLE_PLUGIN_AUTOLOAD", value)
    assert gscore.plugins._env_flag("GSCORE_DISABLE_PLUGIN_AUTOLOAD") is first_party_only


@pytest.mark.parametrize("variable", ["GSCORE_DISABLE_PLUGIN_AUTOLOAD", "GSCORE_STRICT_PLUGINS"])
def test_a_switch_value_that_means_nothing_is_a_config_error(monkeypatch, gscore_host, variable):
    monkeypatch.setenv(variable, "2")
    gscore.plugins.reset_host()
    with pytest.raises(ConfigError, match=rf"{variable}='2' is not a switch value; use 1/true/yes/on or 0/false/no/off"):
        gscore.plugins.host()


def test_a_plugin_module_raising_system_exit_at_import_is_a_recorded_failure(monkeypatch, gscore_host, tmp_path):
    (tmp_path / "gscore_quits.py").write_text("import sys\nsys.exit(2)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = gscore_host.registry.registrar(gscore.registry.PluginSource("quits", "gscore-quits", "1"))
    registry.add("gscore_quits:Algo", name="quits")
    registry.commit()
    with pytest.raises(PluginLoadError, match=r"'gscore_quits:Algo', which does not import: SystemExit: 2"):
        gscore.get("quits")
    sys.modules.pop("gscore_quits", None)


@pytest.mark.parametrize("spelling, name", [("A16W8-RTN", "rtn"), ("a16w8_rtn", "rtn"), ("PrunerKFCompressAlgo", "scop-knockoff"), ("PRUNERFTCOMPRESSALGO", "scop-knockoff"), ("Round_To_Nearest", "rtn")])
def test_installed_aliases_are_found_in_any_case(gscore_host, spelling, name):
    assert gscore.get(spelling) is gscore.get(name)
