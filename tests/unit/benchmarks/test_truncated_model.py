"""truncated_checkpoint: the written folder is the source with only the kept layers (its
logits equal the HF source model with the other layers removed), reused when present; bad
layer choices are ConfigErrors naming the field."""

import copy

import pytest
import torch

from sagellm.benchmarks.truncated_model import truncated_checkpoint
from sagellm.core.errors import ConfigError
from sagellm.engines.native import NativeEngine


@pytest.mark.parametrize(
    ("kw", "keep", "name"),
    [
        ({"num_layers": 1}, [0], "first1"),
        ({"keep_layers": [1]}, [1], "layers1"),
    ],
)
def test_kept_layers_equal_the_hf_model_without_others(tiny_checkpoint, tmp_path, kw, keep, name):
    model, folder = tiny_checkpoint("llama")
    out = truncated_checkpoint(folder, tmp_path, **kw)
    assert out.name.endswith(name) and truncated_checkpoint(folder, tmp_path, **kw) == out
    ref_model = copy.deepcopy(model)
    ref_model.model.layers = torch.nn.ModuleList([model.model.layers[i] for i in keep])
    ref_model.config.num_hidden_layers = len(keep)
    ids = torch.randint(0, 256, (20,), generator=torch.Generator().manual_seed(2)).tolist()
    with torch.inference_mode():
        ref = ref_model(torch.tensor([ids]), use_cache=False).logits[0]
    got = NativeEngine.from_pretrained(out, num_kv_blocks=4).prompt_logits(ids, 0)
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=0)


def test_bad_layer_choices(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    with pytest.raises(ConfigError, match=r"num_layers must be in \[1, 2\]"):
        truncated_checkpoint(folder, tmp_path, 3)
    with pytest.raises(ConfigError, match=r"keep_layers must be strictly increasing"):
        truncated_checkpoint(folder, tmp_path, keep_layers=[1, 0])
    with pytest.raises(ConfigError, match="exactly one of num_layers, keep_layers"):
        truncated_checkpoint(folder, tmp_path)
