import pytest

from gscore.errors import AlgorithmConflictError, UnknownAlgorithmError
from gscore.registry import AlgorithmRegistry, PluginSource, normalise_name


class Alpha:
    """Alpha does things."""


class Beta:
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


def test_add_rejects_non_classes():
    registrar = AlgorithmRegistry().registrar(PluginSource("p"))
    with pytest.raises(TypeError, match="expects a class or a 'module:Class' path"):
        registrar.add(Alpha(), name="alpha")


def test_a_class_registered_by_path_is_imported_only_when_used():
    registry = _registry_with(("decimal:Decimal", "dec", [], "gscore-dec"), ("decimal:nothing_here", "gone", [], "gscore-gone"))
    info = registry.get("dec")
    assert info.summary == "" and not info._resolved
    import decimal

    assert info.cls is decimal.Decimal and info._resolved
    with pytest.raises(ImportError, match="'decimal:nothing_here', which does not import"):
        registry.get("gone").cls
