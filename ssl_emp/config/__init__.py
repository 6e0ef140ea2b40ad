"""Typed, validated run configuration: the schema, loading recipes and overrides, and the check that every
setting given can affect the run. Pydantic lives here and in the command lines only; everything below the
build step (``ssl_emp.build``) takes plain keyword arguments."""

from ssl_emp.config.load import (
    DEFAULT_RECIPE,
    FOLDER_RECIPE,
    build_config,
    data_overrides,
    describe_recipe,
    load_pretrain_config,
    load_run_config,
    parse_overrides,
    read_yaml,
    recipe_for,
)
from ssl_emp.config.schema import (
    AugmentConfig,
    ConfigError,
    DataConfig,
    MethodConfig,
    ModelConfig,
    MonitorConfig,
    OptimConfig,
    PretrainConfig,
    PruningConfig,
    RunConfig,
    TrackingConfig,
    TrainConfig,
)
from ssl_emp.config.unused import (
    check_settings_used,
    describe_options,
    pruning_readers,
    unused_settings,
    write_options_help,
)

__all__ = [
    "DEFAULT_RECIPE",
    "FOLDER_RECIPE",
    "describe_recipe",
    "recipe_for",
    "AugmentConfig",
    "ConfigError",
    "DataConfig",
    "MethodConfig",
    "ModelConfig",
    "MonitorConfig",
    "OptimConfig",
    "PretrainConfig",
    "PruningConfig",
    "RunConfig",
    "TrackingConfig",
    "TrainConfig",
    "build_config",
    "check_settings_used",
    "data_overrides",
    "describe_options",
    "load_pretrain_config",
    "load_run_config",
    "parse_overrides",
    "pruning_readers",
    "read_yaml",
    "unused_settings",
    "write_options_help",
]
