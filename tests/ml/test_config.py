"""The training/inference TOML config: sections, defaults, relative paths and the errors users see."""

from __future__ import annotations

import pytest

from aiida_deeph.ml.config import ConfigError, TrainConfig, config_from_dict, load_config

EXAMPLE = """
[system]
device = "cpu"
seed = 7

[data]
dataset_dir = "dataset"
edges_per_batch = 1000

[model]
model = "deephe3"
channels = 8

[process.train]
learning_rate = 2e-3
max_epochs = 10
ema_decay = 0.99

[process.infer]
model_dir = "run/model"
max_edges_per_chunk = 5000
"""


def test_reads_sections_and_resolves_paths(tmp_path):
    path = tmp_path / "train.toml"
    path.write_text(EXAMPLE)
    config = load_config(path)
    assert (config.system.device, config.system.seed, config.system.precision) == ("cpu", 7, "auto")
    assert config.data.dataset_dir == str(tmp_path / "dataset")
    assert config.data.edges_per_batch == 1000
    assert config.model == {"model": "deephe3", "channels": 8}
    assert config.train.learning_rate == 2e-3 and config.train.max_epochs == 10 and config.train.ema_decay == 0.99
    assert config.train.loss == TrainConfig.loss  # untouched keys keep their defaults
    assert config.infer.model_dir == str(tmp_path / "run" / "model")
    assert config_from_dict(config.to_dict()) == config  # the written config.json reads back the same


def test_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError) as error:
        config_from_dict({"process": {"train": {"learning_rat": 1e-3}}})
    message = str(error.value)
    assert "learning_rat" in message and "learning_rate" in message and "max_epochs" in message


def test_unknown_model_key_lists_that_models_keys():
    with pytest.raises(ConfigError, match="num_heads") as error:
        config_from_dict({"model": {"model": "deeph2", "sh_lmax": 2}})
    assert "sh_lmax" in str(error.value)
    with pytest.raises(ConfigError, match="deeph2, deephe3"):
        config_from_dict({"model": {"model": "deeph3"}})


def test_unknown_section():
    with pytest.raises(ConfigError, match="valid sections"):
        config_from_dict({"training": {}})
    with pytest.raises(ConfigError, match="process.eval"):
        config_from_dict({"process": {"eval": {}}})


@pytest.mark.parametrize(
    "values, match",
    [
        ({"process": {"train": {"max_epochs": 1.5}}}, "max_epochs must be int"),
        ({"process": {"train": {"learning_rate": "1e-3"}}}, "learning_rate must be float"),
        ({"process": {"train": {"resume": 1}}}, "resume must be bool"),
        ({"data": {"edges_per_batch": True}}, "edges_per_batch must be int"),
        ({"system": {"precision": "fp16"}}, "precision must be one of"),
        ({"system": {"device": "gpu"}}, "device must be"),
        ({"process": {"train": {"loss": "l2"}}}, "loss must be one of"),
        ({"process": {"train": {"ema_decay": 1.0}}}, "ema_decay"),
        ({"process": {"train": {"schedule": "step"}}}, "schedule must be one of plateau, cosine"),
        ({"process": {"train": {"beta2": 1.0}}}, "beta2 must be in"),
        ({"data": {"edges_per_batch": 0}}, "must be positive"),
    ],
)
def test_invalid_values(values, match):
    with pytest.raises(ConfigError, match=match):
        config_from_dict(values)


def test_invalid_toml(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("[system\n")
    with pytest.raises(ConfigError, match="invalid TOML"):
        load_config(path)


def test_integers_are_accepted_as_floats():
    assert config_from_dict({"process": {"train": {"learning_rate": 1}}}).train.learning_rate == 1.0
