"""TrainConfig: defaults, None means default, unknown keys and bad values are ConfigErrors."""

from __future__ import annotations

import pytest

from prunekit.errors import ConfigError
from prunekit.train import TrainConfig


def test_defaults_follow_network_slimming() -> None:
    c = TrainConfig()
    assert (c.num_epochs, c.lr, c.momentum, c.weight_decay) == (160, 0.1, 0.9, 1e-4)
    assert (c.epochs, c.schedule, c.schedule_name) == (None, None, "step")
    assert c.bf16 is None and c.channels_last is None and c.compile == "none"


def test_none_means_default() -> None:
    c = TrainConfig(epochs=None, lr=None, momentum=None, schedule="onecycle")
    assert (c.num_epochs, c.lr, c.momentum, c.schedule) == (160, 0.1, 0.9, "onecycle")
    assert TrainConfig.from_dict(None) == TrainConfig()


def test_unknown_key_is_an_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="unknown training option 'lrate'"):
        TrainConfig.from_dict({"lrate": 0.1})


@pytest.mark.parametrize(
    ("field", "value"),
    [("lr", -1.0), ("epochs", 0), ("schedule", "linear"), ("compile", "max"), ("momentum", 1.5)],
)
def test_bad_values(field: str, value: object) -> None:
    with pytest.raises(ConfigError, match=f"'{field}'"):
        TrainConfig(**{field: value})


def test_differences_ignore_cosmetic_fields() -> None:
    a = TrainConfig(epochs=3)
    assert a.differences(TrainConfig(epochs=3, progress=False, log_every=1)) == []
    assert a.differences(TrainConfig(epochs=4, lr=0.2)) == ["epochs", "lr"]
    assert TrainConfig(**a.to_dict()) == a
