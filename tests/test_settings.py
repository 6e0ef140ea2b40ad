"""Every setting a user gives takes effect, or the run says why not (and what would use it)."""

import itertools
import math

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from ssl_emp.build import pretrain
from ssl_emp.config import ConfigError, load_pretrain_config, unused_settings
from ssl_emp.pretrain import main
from ssl_emp.pruning import RECOMMENDED as RECOMMENDED_PRUNING
from ssl_emp.pruning import SCORE_SELECTOR

RECIPE = "configs/default.yaml"


def _tiny(tmp_path, name="run"):
    return [
        "model.proj_hidden_dim=32",
        "model.proj_output_dim=16",
        "tracking.wandb=disabled",
        "monitor.every=0",
        f"run.out_dir={tmp_path}",
        f"run.name={name}",
        "train.checkpoint_every=100",
    ]


def test_a_rate_alone_prunes_with_the_recommended_method():
    cfg = load_pretrain_config(RECIPE, ["pruning.rate=0.7"]).pruning
    assert (cfg.scorer, cfg.selector) == (RECOMMENDED_PRUNING["scorer"], RECOMMENDED_PRUNING["selector"])
    cfg = load_pretrain_config(RECIPE, ["pruning.scorer=emp", "pruning.rate=0.7"]).pruning
    assert (cfg.scorer, cfg.selector) == ("emp", SCORE_SELECTOR)


def test_emp_with_a_rate_prunes_and_the_summary_reports_the_rate_asked_for(tmp_path, capsys):
    """Was: no pruning at all, and the summary said 'requested rate 0.000'."""
    code = main(
        [
            "--config",
            RECIPE,
            *_tiny(tmp_path),
            "model.width=8",
            "train.epochs=20",
            "train.batch_size=128",
            "pruning.scorer=emp",
            "pruning.rate=0.7",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0
    assert "requested rate 0.700, achieved 0.70" in out


@pytest.mark.parametrize(
    "overrides, named",
    [
        (["pruning.selector=full", "pruning.rate=0.5"], "pruning.selector=full"),
        (["pruning.scorer=emp", "pruning.selector=random", "pruning.rate=0.5"], "pruning.scorer"),
        (["pruning.scorer=loss", "pruning.beta=2", "pruning.selector=infobatch", "pruning.rate=0.5"], "pruning.beta"),
        (["pruning.memory=recency", "pruning.selector=topk", "pruning.rate=0.5"], "pruning.memory"),
        (["pruning.eps=0.3", "pruning.selector=topk", "pruning.rate=0.5"], "pruning.eps"),
        (["pruning.infobatch_r=0.5", "pruning.selector=random"], "pruning.infobatch_r"),
        (["pruning.selector=random"], "pruning.selector"),
        (["pruning.scorer=emp"], "pruning.scorer"),
        (["method.queue_size=512"], "method.queue_size"),
        (["model.cifar_stem=true"], "model.cifar_stem"),
    ],
)
def test_a_command_line_setting_that_cannot_take_effect_is_refused(overrides, named, capsys):
    assert main(["--config", RECIPE, *overrides]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and named in err and "Traceback" not in err and err.count("\n") == 1


def test_the_refusal_says_what_would_read_the_setting():
    with pytest.raises(ConfigError, match=r"pruning.eps \(read by selector eps_greedy; this run uses selector topk"):
        load_pretrain_config(RECIPE, ["pruning.eps=0.3", "pruning.selector=topk", "pruning.rate=0.5"])


def test_recipe_settings_that_this_run_does_not_read_warn_once(tmp_path, capsys):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("pruning:\n  eps: 0.2\n  beta: 2.0\n  selector: infobatch\n  rate: 0.5\n")
    cfg = load_pretrain_config(recipe, [])
    err = capsys.readouterr().err
    assert cfg.pruning.eps == 0.2
    assert err.count("\n") == 1 and err.startswith("warning: ") and "pruning.beta, pruning.eps" in err
    load_pretrain_config(RECIPE, ["pruning.rate=0.5"])  # defaults nobody wrote say nothing
    assert capsys.readouterr().err == ""


def test_moco_queue_as_large_as_the_dataset_is_refused(tmp_path, capsys):
    code = main(["--config", "configs/moco_digits.yaml", *_tiny(tmp_path), "method.queue_size=100000"])
    err = capsys.readouterr().err
    assert code == 2 and "method.queue_size=100000" in err and "1347 images" in err


# --------------------------------------------------------------------------- property-based


_ANY_CONFIG = st.fixed_dictionaries(
    {
        "method.name": st.sampled_from(["simclr", "moco"]),
        "pruning.scorer": st.sampled_from(["loss", "emp", "ucb", None]),
        "pruning.selector": st.sampled_from(["full", "random", "rs2", "infobatch", "topk", "eps_greedy", None]),
        "pruning.rate": st.sampled_from([0.0, 0.1, 0.3, 0.5, 0.7, 0.85, 0.95, None]),
        "pruning.infobatch_r": st.sampled_from([0.5, None, None, None]),
        "pruning.beta": st.sampled_from([0.0, 0.5, 2.0, None]),
        "pruning.memory": st.sampled_from(["drift", "loss_change", "recency", "agreement", "entropy", None]),
        "pruning.warmup_epochs": st.sampled_from([0, 1, 2, None]),
        "pruning.anneal": st.sampled_from([0.0, 0.125, 0.5, None]),
        "train.epochs": st.integers(1, 6),
        "train.batch_size": st.sampled_from([2, 16, 48, 100]),
    }
)


@st.composite
def _coherent_config(draw):
    """Settings that fit together (each one read by the run), so that most draws train; rates, schedules and
    batch sizes still range over values that cannot be reached or do not fit the data."""
    selector = draw(st.sampled_from(["random", "rs2", "infobatch", "topk", "eps_greedy", None]))
    scorer = draw(st.sampled_from(["loss", "emp", "ucb"])) if selector not in ("random", "rs2") else None
    published = selector == "infobatch" and draw(st.booleans()) and draw(st.booleans())
    return {
        "method.name": draw(st.sampled_from(["simclr", "moco"])),
        "pruning.scorer": scorer,
        "pruning.selector": selector,
        "pruning.rate": None if published else draw(st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9])),
        "pruning.infobatch_r": draw(st.sampled_from([0.3, 0.5, 0.9])) if published else None,
        "pruning.beta": draw(st.sampled_from([0.0, 0.5, 2.0])) if scorer == "emp" else None,
        "pruning.memory": draw(
            st.sampled_from(["drift", "loss_change", "recency", "agreement", "entropy", "forgetting"])
        )
        if scorer == "emp"
        else None,
        "pruning.warmup_epochs": draw(st.sampled_from([1, 2, None])),
        "pruning.anneal": draw(st.sampled_from([0.0, 0.125, None])),
        "train.epochs": draw(st.integers(3, 12)),
        "train.batch_size": draw(st.sampled_from([8, 16, 32])),
    }


_RUN_NUMBERS = itertools.count(1)  # hypothesis reuses tmp_path across examples: each run gets its own folder
_CONFIGS = st.one_of(_coherent_config(), _ANY_CONFIG)


def _check_config(tmp_path, drawn: dict):
    """Either the settings load (each one given is read by the run) and it trains, with a finite final loss and an
    achieved rate within 0.005 of the requested one; or the config or the run refuses it with a one-line
    ValueError (ConfigError is one), which the command line prints as ``error:`` and exits 2."""
    name = f"p{next(_RUN_NUMBERS)}"
    overrides = [f"{k}={v}" for k, v in drawn.items() if v is not None]
    given = [
        *_tiny(tmp_path, name),
        "data.subset=96",
        "model.width=8",
        *(["method.queue_size=32"] if drawn["method.name"] == "moco" else []),
        *overrides,
    ]
    try:
        cfg = load_pretrain_config(RECIPE, given)
        assert not set(unused_settings(cfg)) & {o.split("=")[0] for o in given}
        result = pretrain(cfg, recipe="default", show_progress=False)
    except ValueError as refusal:
        assert str(refusal) and "\n" not in str(refusal), str(refusal)
        event(f"refused by {'the config' if isinstance(refusal, ConfigError) else 'the run'}")
        return
    event("trained")
    assert result.epochs_done == drawn["train.epochs"] and math.isfinite(result.final_loss)
    assert result.full_data_forwards == drawn["train.epochs"] * 96
    assert result.achieved_rate == pytest.approx(1 - result.sample_forwards / result.full_data_forwards)
    if cfg.pruning.infobatch_r is not None:  # InfoBatch's published rule sets no target rate
        assert result.requested_rate is None and 0.0 <= result.achieved_rate < 1.0
    else:
        assert result.requested_rate == (drawn["pruning.rate"] or 0.0)
        assert abs(result.achieved_rate - result.requested_rate) <= 0.005


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=_CONFIGS)
def test_every_drawn_config_trains_at_its_rate_or_refuses_cleanly(tmp_path, drawn):
    _check_config(tmp_path, drawn)


@pytest.mark.slow
@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(drawn=_CONFIGS)
def test_every_drawn_config_trains_at_its_rate_or_refuses_cleanly_slow_tier(tmp_path, drawn):
    _check_config(tmp_path, drawn)
