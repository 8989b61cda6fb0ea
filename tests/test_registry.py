import pytest

from gscore.algorithm import Algorithm
from gscore.errors import AlgorithmConflictError, PluginLoadError, RegistrationError, UnknownAlgorithmError
from gscore.registry import AlgorithmRegistry, PluginSource, lookup_key, normalise_name


class Alpha(Algorithm):
    """Alpha does things."""


class Beta(Algorithm):
    pass


def _registry_with(*entries):
    registry = AlgorithmRegistry()
    for cls, name, aliases, dist in entries:
        registrar = registry.registrar(PluginSource(name, dist, "1.0"))
        registrar.add(cls, name=name, aliases=aliases)
        registrar.commit()
    return registry


@pytest.mark.parametrize(
    "raw, key",
    [("RTN", "rtn"), ("RoundToNearest", "round-to-nearest"), ("round_to_nearest", "round-to-nearest"),
     (" Smooth Quant ", "smooth-quant"), ("a8w8.dynamic", "a8w8-dynamic")],
)
def test_names_are_normalised(raw, key):
    assert normalise_name(raw) == key


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_empty_or_non_string_names_are_rejected(bad):
    with pytest.raises(ValueError, match="non-empty string"):
        normalise_name(bad)


def test_lookup_by_name_alias_and_spelling():
    registry = _registry_with((Alpha, "alpha", ["AlphaAlgo", "a1"], "gscore-alpha"))
    for name in ("alpha", "ALPHA", "AlphaAlgo", "alpha_algo", "a1"):
        assert registry.get(name).cls is Alpha
    info = registry.get("alpha")
    assert info.summary == "Alpha does things."
    assert info.source.distribution == "gscore-alpha"


def test_unknown_name_lists_installed_closest_and_failures():
    registry = _registry_with((Alpha, "alpha", [], "gscore-alpha"), (Beta, "beta", [], "gscore-beta"))
    with pytest.raises(UnknownAlgorithmError) as err:
        registry.get("alhpa", failures=["gamma (gscore-gamma): import failed: boom"])
    text = str(err.value)
    assert "Did you mean 'alpha'?" in text
    assert "Installed algorithms: alpha, beta." in text
    assert "gamma (gscore-gamma): import failed: boom" in text
    assert isinstance(err.value, KeyError)


def test_a_name_claimed_twice_names_both_distributions_and_spares_the_rest():
    registry = _registry_with((Alpha, "alpha", ["shared"], "gscore-alpha"), (Beta, "beta", ["shared"], "gscore-beta"))
    with pytest.raises(AlgorithmConflictError) as err:
        registry.get("shared")
    assert "gscore-alpha" in str(err.value) and "gscore-beta" in str(err.value)
    assert registry.get("alpha").cls is Alpha and registry.get("beta").cls is Beta


def test_staged_registrations_vanish_unless_committed():
    registry = AlgorithmRegistry()
    registrar = registry.registrar(PluginSource("p", "gscore-p", "1"))
    registrar.add(Alpha, name="alpha")
    with pytest.raises(UnknownAlgorithmError):
        registry.get("alpha")
    registrar.commit()
    assert registry.get("alpha").cls is Alpha


@pytest.mark.parametrize("bad", [Alpha(), dict, "not a path", 3])
def test_add_accepts_only_algorithm_classes_or_paths(bad):
    registrar = AlgorithmRegistry().registrar(PluginSource("p"))
    with pytest.raises(RegistrationError, match="expects a gscore.Algorithm subclass or a 'module:Class' path"):
        registrar.add(bad, name="alpha")


def test_a_class_registered_by_path_is_imported_only_when_used():
    registry = _registry_with(
        ("gscore.algorithm:PTQAlgorithm", "ptq-base", [], "gscore-base"),
        ("gscore.algorithm:nothing_here", "gone", [], "gscore-gone"),
        ("decimal:Decimal", "dec", [], "gscore-dec"),
    )
    info = registry.get("ptq-base")
    assert info.summary == "" and not info._resolved
    from gscore.algorithm import PTQAlgorithm

    assert info.cls is PTQAlgorithm and info._resolved
    with pytest.raises(PluginLoadError, match="'gscore.algorithm:nothing_here', which does not import"):
        registry.get("gone").cls
    with pytest.raises(PluginLoadError, match="'decimal:Decimal' is not a gscore.Algorithm subclass"):
        registry.get("dec").cls


@pytest.mark.parametrize("spelling", ["A16W8-RTN", "a16w8_rtn", "A16w8Rtn", "a16w8 rtn"])
def test_lookup_ignores_case_and_separators(spelling):
    registry = _registry_with((Alpha, "rtn", ["a16w8-rtn"], "gscore-rtn"))
    assert registry.get(spelling).cls is Alpha


def test_camel_case_names_with_capital_runs_are_found():
    registry = _registry_with((Alpha, "scop", ["PrunerKfCompressAlgo"], "gscore-scop"))
    for spelling in ("PrunerKFCompressAlgo", "prunerkfcompressalgo", "pruner-kf-compress-algo"):
        assert registry.get(spelling).cls is Alpha
    assert lookup_key("PrunerKFCompressAlgo") == lookup_key("PrunerKfCompressAlgo")


@pytest.mark.parametrize("bad", ["", "   ", None, 3])
def test_get_with_an_empty_or_non_string_name_is_an_unknown_algorithm(bad):
    with pytest.raises(UnknownAlgorithmError, match="must be a non-empty string"):
        _registry_with((Alpha, "alpha", [], "gscore-alpha")).get(bad)
