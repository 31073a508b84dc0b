"""The quantizer registry's names equal the config's; bad input fails with ConfigError naming
the field and the allowed values (unknown method, int4 group size that does not divide the
model's input dimensions), at config time and at engine load."""

import pytest
from pydantic import ValidationError

from sagellm.accel import AccelController
from sagellm.accel.quantization import QUANTIZERS, allowed_group_sizes, make_quantizer
from sagellm.core.config import QUANT_METHOD_NAMES, AccelConfig, EngineConfig
from sagellm.core.errors import ConfigError
from sagellm.engines.native import NativeEngine


def test_registry_names_equal_config_names():
    assert sorted(QUANTIZERS) == sorted(QUANT_METHOD_NAMES)
    for name in QUANT_METHOD_NAMES:
        assert make_quantizer(name, 64).name == name


def test_unknown_method_lists_known():
    with pytest.raises(ConfigError, match=r"accel\.method.*'int3'.*awq.*fp8.*gptq.*int4.*int8"):
        make_quantizer("int3")
    with pytest.raises(ValidationError, match=r"int3.*known: awq, fp8, gptq, int4, int8"):
        AccelConfig(enable_quantization=True, method="int3")


def test_allowed_group_sizes_for_smollm2_dims():
    assert allowed_group_sizes([576, 1536]) == [32, 64]  # 576 = 4.5 * 128
    assert allowed_group_sizes([4096, 11008]) == [32, 64, 128, 256]


def test_controller_off_is_a_no_op():
    ctl = AccelController()
    ctl.setup(EngineConfig())
    assert ctl.quantizer is None
    sentinel = object()
    assert ctl.get_quantized_model(sentinel) is sentinel


@pytest.mark.parametrize("method", ["int4", "awq", "gptq"])
def test_bad_group_size_at_engine_load(tiny_checkpoint, method):
    _, folder = tiny_checkpoint("llama")
    acc = AccelConfig(enable_quantization=True, method=method, group_size=48)
    with pytest.raises(ConfigError, match=r"accel\.group_size=48.*allowed values: \[32, 64\]"):
        NativeEngine.from_pretrained(folder, num_kv_blocks=8, accel=acc)


def test_calibrating_method_without_tokenizer_is_a_config_error(tiny_checkpoint):
    _, folder = tiny_checkpoint("llama")
    acc = AccelConfig(enable_quantization=True, method="gptq", group_size=32)
    with pytest.raises(ConfigError, match=r"accel\.method 'gptq'.*no tokenizer"):
        NativeEngine.from_pretrained(folder, num_kv_blocks=8, accel=acc)
