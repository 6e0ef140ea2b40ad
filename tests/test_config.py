import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest

from ssl_emp.config import (
    ConfigError,
    PretrainConfig,
    PruningConfig,
    describe_options,
    load_pretrain_config,
    parse_overrides,
    read_yaml,
)
from ssl_emp.config.load import DEFAULT_RECIPE
from ssl_emp.config.unused import OPTIONS_HELP
from ssl_emp.pretrain import main
from ssl_emp.pruning import Pruner, PruningSettings

CONFIGS = sorted((Path(__file__).parent.parent / "configs").glob("*.yaml"))
DEFAULT = Path(__file__).parent.parent / "configs" / "default.yaml"


def _flat(tree: dict, prefix: str = "") -> dict:
    """``{dotted.key: value}`` for a nested mapping."""
    out = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return out


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_recipe_loads_as_written_with_defaults_elsewhere_and_no_unread_setting(path, capsys):
    """Each shipped recipe validates; every value it writes reaches the config unchanged, every key it leaves out
    has the schema default, and it sets nothing the run would not read (that would warn on stderr)."""
    cfg = load_pretrain_config(path)
    assert isinstance(cfg, PretrainConfig)
    assert capsys.readouterr().err == ""
    written = _flat(read_yaml(path))
    loaded, defaults = _flat(cfg.model_dump()), _flat(PretrainConfig().model_dump())
    assert written and set(written) <= set(loaded)
    for key, value in written.items():
        assert loaded[key] == value, key
    derived = {"pruning.scorer", "pruning.selector"} if "pruning.rate" in written else set()
    for key in set(loaded) - set(written) - derived:
        assert loaded[key] == defaults[key], key


def test_an_override_wins_over_the_recipe_and_changes_nothing_else():
    recipe = load_pretrain_config(DEFAULT).model_dump()
    overridden = load_pretrain_config(DEFAULT, ["train.epochs=3", "model.width=8", "optim.lr=0.05"]).model_dump()
    changed = {k for k, v in _flat(overridden).items() if _flat(recipe)[k] != v}
    assert changed == {"train.epochs", "model.width", "optim.lr"}
    assert (overridden["train"]["epochs"], overridden["model"]["width"], overridden["optim"]["lr"]) == (3, 8, 0.05)
    # The recipe's other keys in an overridden section survive the merge (the recipe differs from the defaults).
    assert (
        overridden["train"]["checkpoint_every"]
        == recipe["train"]["checkpoint_every"]
        != PretrainConfig().train.checkpoint_every
    )


def test_a_bad_key_in_a_recipe_file_is_refused_naming_the_file_and_the_valid_key(tmp_path):
    recipe = tmp_path / "typo.yaml"
    recipe.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError) as info:
        load_pretrain_config(recipe)
    message = str(info.value)
    assert str(recipe) in message and "unknown key 'train.epoch'" in message and "'train.epochs'" in message


def test_a_recipe_that_is_not_a_mapping_is_refused(tmp_path):
    recipe = tmp_path / "list.yaml"
    recipe.write_text("- train.epochs: 3\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_pretrain_config(recipe)


def test_the_pruning_section_and_the_engine_settings_declare_the_same_fields_and_defaults():
    engine = {f.name: f.default for f in dataclasses.fields(PruningSettings)}
    assert list(PruningConfig.model_fields) == list(engine)
    config_defaults, engine_defaults = PruningConfig(), PruningSettings()
    for name in engine:
        assert getattr(config_defaults, name) == getattr(engine_defaults, name) == engine[name], name


@pytest.mark.parametrize(
    "overrides, keywords",
    [
        ([], {}),
        (["pruning.rate=0.7"], {"rate": 0.7}),
        (
            ["pruning.rate=0.5", "pruning.scorer=emp", "pruning.beta=2", "pruning.memory=drift"],
            {"rate": 0.5, "scorer": "emp", "beta": 2.0, "memory": "drift"},
        ),
        (
            ["pruning.selector=infobatch", "pruning.infobatch_r=0.5", "pruning.infobatch_rescale=false"],
            {"selector": "infobatch", "infobatch_r": 0.5, "infobatch_rescale": False},
        ),
        (
            ["pruning.rate=0.3", "pruning.selector=topk", "pruning.warmup_epochs=2", "pruning.anneal=0.25"],
            {"rate": 0.3, "selector": "topk", "warmup_epochs": 2, "anneal": 0.25},
        ),
    ],
)
def test_a_configs_pruning_section_builds_the_engine_settings_the_same_keywords_give(overrides, keywords):
    """The config and a user's own loop (``Pruner(n, epochs, **keywords)``) resolve the same settings, including
    the method a rate alone or a scorer alone prunes with."""
    section = load_pretrain_config(DEFAULT, overrides).pruning
    settings = PruningSettings(**section.model_dump())
    for name in PruningConfig.model_fields:
        assert getattr(settings, name) == getattr(section, name), name
    assert settings == PruningSettings.from_kwargs(**keywords) == Pruner(100, 40, **keywords).cfg


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


@pytest.mark.parametrize(
    "override, key",
    [
        ("pruning.rate=1.0", "pruning.rate"),
        ("pruning.rate=-0.1", "pruning.rate"),
        ("pruning.beta=-1", "pruning.beta"),
        ("pruning.beta=.nan", "pruning.beta"),
        ("pruning.beta=.inf", "pruning.beta"),
        ("pruning.scorer=emq", "pruning.scorer"),
        ("train.nonfinite=ignore", "train.nonfinite"),
    ],
)
def test_pruning_and_fault_options_out_of_range_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")) as error:
        load_pretrain_config(None, [override])
    assert "Traceback" not in str(error.value)


def test_matched_infobatch_without_warmup_is_refused_rather_than_missing_its_rate():
    with pytest.raises(ConfigError, match="warmup_epochs >= 1"):
        load_pretrain_config(None, ["pruning.selector=infobatch", "pruning.rate=0.3", "pruning.warmup_epochs=0"])
    load_pretrain_config(None, ["pruning.selector=random", "pruning.rate=0.3", "pruning.warmup_epochs=0"])


def test_help_answers_before_torch_is_imported():
    """`--help` must be quick: torch, kornia, lightly and wandb load only after the arguments are parsed."""
    probe = (
        "import sys\nfrom ssl_emp.pretrain import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('loaded:', sorted(m for m in ('torch', 'kornia', 'lightly', 'wandb') if m in sys.modules))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=Path(__file__).parent.parent
    )
    assert done.returncode == 0, done.stderr
    assert "pruning.rate" in done.stdout and "loaded: []" in done.stdout


def test_the_options_help_prints_is_current():
    assert OPTIONS_HELP.read_text() == describe_options() + "\n", (
        "ssl_emp/config/options.txt is out of date: python -c 'from ssl_emp.config import write_options_help; "
        "write_options_help()'"
    )


def test_no_recipe_means_the_default_recipe():
    assert DEFAULT_RECIPE.read_text() == DEFAULT.read_text()  # the package's copy is configs/default.yaml
    assert load_pretrain_config(None) == load_pretrain_config(DEFAULT)
    assert load_pretrain_config(None, ["train.epochs=3"]).model.width == read_yaml(DEFAULT)["model"]["width"]


def test_an_override_error_names_the_override_not_the_recipe():
    with pytest.raises(ConfigError) as info:
        load_pretrain_config(DEFAULT, ["train.epochs=many"])
    message = str(info.value)
    assert "(override train.epochs=many)" in message and "default.yaml" not in message
    with pytest.raises(ConfigError, match=r"unknown key 'train\.epoch' \(override train\.epoch=3\)"):
        load_pretrain_config(DEFAULT, ["train.epoch=3"])


def test_resume_from_something_that_is_not_a_run_gets_one_line(tmp_path, capsys):
    assert main(["--resume", "README.md"]) == 2
    assert capsys.readouterr().err.count("\n") == 1
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text(DEFAULT.read_text())
    (run / "checkpoints" / "last.pt").write_text("not a checkpoint\n")
    assert main(["--resume", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a checkpoint" in err
