"""Model adapters as plugins: the ``gscore_register_models`` hook, the registry's name guards, ``gscore models``.

A model adapter is a :class:`gscore.calib.NetworkHelper` subclass for an architecture and
optionally a loader. Names are guarded like algorithm names: a third-party plugin that claims
a first-party adapter's name is refused whole (its algorithms too), two third-party plugins
claiming one name make that name an error naming both, and everything else keeps working.
"""

import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gscore
from gscore import hookimpl
from gscore.calib import NetworkHelper
from gscore.cli import main
from gscore.errors import ModelConflictError, UnknownModelError
from gscore.testing.conformance import ModelAdapterConformance


class EncoderHelper(NetworkHelper):
    """Helper for a toy encoder family."""


def load_encoder(path, **options):
    return ("network from", str(path), options), EncoderHelper()


class Plugin:
    """An inline plugin registering one adapter (and optionally an algorithm)."""

    def __init__(self, name, algorithm=None):
        self.name = name
        self.algorithm = algorithm

    @hookimpl
    def gscore_register_models(self, registry):
        registry.add(self.name, helper=EncoderHelper, loader=load_encoder, aliases=[f"{self.name}-family"])

    @hookimpl
    def gscore_register_algorithms(self, registry):
        if self.algorithm:
            registry.add(gscore.get("rtn"), name=self.algorithm)


def test_first_party_adapters_are_listed_without_importing_mindspore():
    code = "import sys, gscore; print(sorted(m.name for m in gscore.models())); print('mindspore' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split("\n")[:2] == ["['generic', 'llama']", "False"]


def test_gscore_models_lists_every_adapter(gscore_host, register_inline_plugin, capsys):
    register_inline_plugin(Plugin("encoder"), "encoder-plugin", distribution="gscore-encoder")
    assert main(["models"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("llama        gscore ") and "[loader] (aliases: llama-family, mistral, qwen2, smollm2)" in out[0]
    assert out[1].startswith("generic      gscore ") and "[helper only]" in out[1]
    assert out[2].startswith("encoder      gscore-encoder 0 [loader] (aliases: encoder-family)  Helper for a toy encoder family.")


def test_a_third_party_adapter_is_found_by_name_and_alias(gscore_host, register_inline_plugin):
    register_inline_plugin(Plugin("encoder"), "encoder-plugin", distribution="gscore-encoder")
    adapter = gscore.model("Encoder_Family")
    assert adapter.helper_class is EncoderHelper and isinstance(adapter.helper(), EncoderHelper)
    network, helper = adapter.load("/models/enc", layers=2)
    assert network == ("network from", "/models/enc", {"layers": 2}) and isinstance(helper, EncoderHelper)
    with pytest.raises(UnknownModelError, match=r"no gscore model adapter named 'encodr'. Did you mean 'encoder'\?"):
        gscore.model("encodr")
    with pytest.raises(UnknownModelError, match="'generic' .* has no loader"):
        gscore.model("generic").load("/somewhere")


def test_a_third_party_plugin_cannot_take_a_first_party_adapter_name(gscore_host, register_inline_plugin):
    register_inline_plugin(Plugin("Llama", algorithm="hijacker-algo"), "hijack", distribution="gscore-hijack")
    assert gscore.model("llama").source.distribution == "gscore"
    (failure,) = [f for f in gscore.plugin_failures() if f.distribution == "gscore-hijack"]
    assert "registration refused: it registers model adapter names held by first-party plugins ('llama' of gscore" in failure.error
    with pytest.raises(gscore.UnknownAlgorithmError):  # refused whole: its algorithm is not registered either
        gscore.get("hijacker-algo")


def test_two_third_party_plugins_claiming_one_name_make_it_an_error(gscore_host, register_inline_plugin):
    register_inline_plugin(Plugin("encoder"), "first", distribution="gscore-enc-a")
    register_inline_plugin(Plugin("encoder"), "second", distribution="gscore-enc-b")
    with pytest.raises(ModelConflictError, match="model adapter name 'encoder' is registered by more than one plugin: gscore-enc-a .*gscore-enc-b"):
        gscore.model("encoder")
    assert gscore.model("llama").name == "llama"
    assert any("gscore.model('encoder') raises ModelConflictError" in f.error for f in gscore.plugin_failures())


@pytest.mark.parametrize(
    "helper, loader, message",
    [
        (object, None, "helper must be a gscore.calib.NetworkHelper subclass"),
        ("not a path", None, "helper must be an object or a 'module:attr' path"),
        (EncoderHelper, 42, "loader must be callable"),
    ],
)
def test_registry_add_refuses_what_is_not_an_adapter(helper, loader, message, gscore_host, register_inline_plugin):
    class Bad:
        @hookimpl
        def gscore_register_models(self, registry):
            registry.add("bad", helper=helper, loader=loader)

    register_inline_plugin(Bad(), "bad", distribution="gscore-bad")
    (failure,) = [f for f in gscore.plugin_failures() if f.distribution == "gscore-bad"]
    assert "gscore_register_models raised RegistrationError" in failure.error and message in failure.error
    with pytest.raises(UnknownModelError):
        gscore.model("bad")


def test_an_installed_package_registers_an_adapter_through_its_entry_point(tmp_path):
    (tmp_path / "gscore_vision.py").write_text(
        textwrap.dedent(
            '''
            import gscore
            GSCORE_API_VERSION = gscore.API_VERSION

            @gscore.hookimpl
            def gscore_register_models(registry):
                registry.add("vision", helper="gscore_vision_impl:VisionHelper", summary="conv nets for images")
            '''
        )
    )
    (tmp_path / "gscore_vision_impl.py").write_text("from gscore.calib import NetworkHelper\n\nclass VisionHelper(NetworkHelper):\n    pass\n")
    info = tmp_path / "gscore_vision-0.3.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: gscore-vision\nVersion: 0.3.0\n")
    (info / "entry_points.txt").write_text("[gscore]\nvision = gscore_vision\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    env.pop("GSCORE_DISABLE_PLUGINS", None)
    code = "import gscore; from gscore.cli import main; main(['models']); print(gscore.model('vision').helper_class.__name__)"
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "vision       gscore-vision 0.3.0 [helper only]  conv nets for images" in result.stdout
    assert result.stdout.strip().endswith("VisionHelper")


def _tiny_llama():
    import mindspore as ms

    from gscore.models.llama import LlamaConfig, LlamaForCausalLM

    ms.set_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_layers=2, num_heads=4, num_kv_heads=2, max_positions=64)
    return LlamaForCausalLM(config)


def _token_windows():
    return np.random.default_rng(0).integers(3, 64, (4, 16)).astype(np.int32)


class TestLlamaAdapterConformance(ModelAdapterConformance):
    adapter_name = "llama"
    make_network = staticmethod(_tiny_llama)
    make_datasets = staticmethod(_token_windows)
