import pytest

from sagellm.core import Registry, SamplingParams


@pytest.mark.parametrize(
    "kwargs, field",
    [
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": -3}, "max_tokens"),
        ({"temperature": -0.1}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_sampling_validation_names_field(kwargs, field):
    with pytest.raises(ValueError, match=f"sampling.{field}"):
        SamplingParams(**kwargs).validate()


def test_sampling_defaults_are_valid_and_greedy():
    sp = SamplingParams()
    sp.validate()
    assert sp.greedy


def test_registry_lists_known_names():
    r: Registry[int] = Registry("policy")
    r.register("lru")(1)
    r.register("arc")(2)
    assert r.get("arc") == 2
    with pytest.raises(ValueError, match=r"unknown policy 'x'; known: arc, lru"):
        r.get("x")
    with pytest.raises(ValueError, match="already registered"):
        r.register("lru")(3)
