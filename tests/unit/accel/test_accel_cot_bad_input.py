"""Bad CoT settings fail with a ConfigError naming the field and the allowed values; a
drafter with another vocabulary is refused; an empty prompt is an InvalidRequestError."""

import pytest

from sagellm.accel.cot import CoTAccelController, CoTConfig
from sagellm.benchmarks.random_model import random_checkpoint
from sagellm.core.errors import ConfigError, InvalidRequestError
from sagellm.engines.native import NativeEngine

DELIMS = frozenset({10})


@pytest.mark.parametrize(
    "field",
    [
        "max_new_tokens",
        "max_step_tokens",
        "trial_max_tokens",
        "trial_stable_checks",
        "trial_every_steps",
        "min_steps_before_exit",
    ],
)
@pytest.mark.parametrize("value", [0, -3])
def test_non_positive_counts_name_the_field(field, value):
    with pytest.raises(ConfigError, match=rf"cot\.{field} must be an integer >= 1, got {value}"):
        CoTConfig(delimiter_token_ids=DELIMS, **{field: value})


def test_other_settings_are_checked():
    with pytest.raises(ConfigError, match="cot.delimiter_token_ids must name at least one"):
        CoTConfig(delimiter_token_ids=frozenset())
    with pytest.raises(ConfigError, match="cot.trial_prompt_token_ids must be non-empty"):
        CoTConfig(delimiter_token_ids=DELIMS, early_exit=True)
    with pytest.raises(ConfigError, match="at least one of speculative_steps, early_exit"):
        CoTConfig(delimiter_token_ids=DELIMS, speculative_steps=False)


def test_drafter_and_token_ids_must_fit_the_target(tiny_checkpoint, tmp_path):
    _, folder = tiny_checkpoint("llama")
    target = NativeEngine.from_pretrained(folder, num_kv_blocks=8)
    other = random_checkpoint(tmp_path, hidden_size=32, num_layers=1, vocab_size=300)
    drafter = NativeEngine.from_pretrained(other, num_kv_blocks=8)
    cfg = CoTConfig(delimiter_token_ids=DELIMS)
    with pytest.raises(ConfigError, match=r"cot\.drafter: the drafter's vocab_size 300 differs"):
        CoTAccelController(target, cfg, drafter)
    with pytest.raises(ConfigError, match=r"cot\.drafter: speculative_steps needs a drafter"):
        CoTAccelController(target, cfg, None)
    bad = CoTConfig(delimiter_token_ids=frozenset({10, 256}))
    with pytest.raises(ConfigError, match=r"cot\.delimiter_token_ids: token ids \[256\] outside"):
        CoTAccelController(target, bad, target)
    with pytest.raises(InvalidRequestError, match="prompt_token_ids is empty"):
        CoTAccelController(target, cfg, target).accelerate_cot([])
