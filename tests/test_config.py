from pathlib import Path

import pytest

from ssl_emp.config import ConfigError, PretrainConfig, load_pretrain_config, parse_overrides
from ssl_emp.pretrain import main

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_validates(path):
    assert isinstance(load_pretrain_config(path), PretrainConfig)


def test_paper_setting_is_resnet50_cifar_stem_cifar100():
    cfg = load_pretrain_config(Path(__file__).parent.parent / "configs" / "simclr_cifar100_resnet50.yaml")
    assert (cfg.data.name, cfg.model.backbone, cfg.model.cifar_stem, cfg.method.name) == ("cifar100", "resnet50", True, "simclr")


def test_overrides_are_parsed_as_yaml_and_applied():
    cfg = load_pretrain_config(None, ["train.epochs=7", "optim.lr=1e-2", "data.root=/x", "train.compile=true"])
    assert cfg.train.epochs == 7 and cfg.optim.lr == 0.01 and cfg.data.root == "/x" and cfg.train.compile is True


def test_unknown_key_names_closest_and_valid_keys():
    with pytest.raises(ConfigError) as info:
        load_pretrain_config(None, ["train.epoch=3"])
    message = str(info.value)
    assert "unknown key 'train.epoch'" in message
    assert "Did you mean 'train.epochs'" in message
    assert "train.batch_size" in message  # the valid keys are listed


def test_unknown_section_names_valid_sections():
    with pytest.raises(ConfigError, match="Valid keys here: .*augment.*optim"):
        load_pretrain_config(None, ["optimizer.lr=0.1"])


def test_wrong_type_and_range_are_errors():
    with pytest.raises(ConfigError, match="'train.epochs' = 'many'"):
        load_pretrain_config(None, ["train.epochs=many"])
    with pytest.raises(ConfigError, match="optim.lr"):
        load_pretrain_config(None, ["optim.lr=-1"])
    with pytest.raises(ConfigError, match="data.name"):
        load_pretrain_config(None, ["data.name=mnist"])


def test_override_without_equals_is_explained():
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["train.epochs"])


def test_missing_recipe_file_is_explained(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_pretrain_config(tmp_path / "nope.yaml")


def test_help_lists_the_options(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for key in ("data.name", "train.epochs", "optim.lr", "tracking.wandb", "run.resume", "--config", "--resume"):
        assert key in out


def test_cli_reports_a_bad_key_without_a_traceback(capsys):
    assert main(["train.epohcs=2"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "train.epochs" in err and "Traceback" not in err


@pytest.mark.parametrize("override, key", [
    ("pruning.rate=1.0", "pruning.rate"), ("pruning.rate=-0.1", "pruning.rate"),
    ("pruning.beta=-1", "pruning.beta"), ("pruning.beta=.nan", "pruning.beta"), ("pruning.beta=.inf", "pruning.beta"),
    ("pruning.scorer=emq", "pruning.scorer"), ("train.nonfinite=ignore", "train.nonfinite"),
])
def test_pruning_and_fault_options_out_of_range_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        load_pretrain_config(None, [override])
    assert "Traceback" not in str(error.value)


def test_matched_infobatch_without_warmup_is_refused_rather_than_missing_its_rate():
    with pytest.raises(ConfigError, match="warmup_epochs >= 1"):
        load_pretrain_config(None, ["pruning.selector=infobatch", "pruning.rate=0.3", "pruning.warmup_epochs=0"])
    load_pretrain_config(None, ["pruning.selector=random", "pruning.rate=0.3", "pruning.warmup_epochs=0"])
