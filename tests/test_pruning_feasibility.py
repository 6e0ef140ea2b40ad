"""Which rates a run can reach, known before training: Pruner.max_rate / Pruner.min_epochs agree with what the
Pruner accepts, never jump between neighbouring epoch counts, and every refusal names what would work."""

import math
import warnings

import pytest
import torch

from ssl_emp.pruning import Pruner, SampleStats

RATES = [round(0.05 * k, 2) for k in range(1, 20)]


def _accepts(rate, epochs, **settings) -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            Pruner(200, epochs, rate=rate, **settings)
        return True
    except ValueError as exc:
        assert "cannot be reached" in str(exc)
        return False


@pytest.mark.parametrize("warmup", [0, 1, 2, 3])
@pytest.mark.parametrize("anneal", [0.0, 0.125, 0.25, 0.5])
def test_feasibility_is_what_max_rate_and_min_epochs_say_and_only_loosens_with_epochs(warmup, anneal):
    previous = -1.0
    for epochs in range(1, 41):
        highest = Pruner.max_rate(epochs, warmup)
        assert highest >= previous  # adding an epoch never makes a rate unreachable
        previous = highest
        assert highest == 0 or _accepts(highest, epochs, warmup_epochs=warmup, anneal=anneal)
        assert highest == 0.999 or not _accepts(round(highest + 0.001, 3), epochs, warmup_epochs=warmup, anneal=anneal)
        for rate in RATES:
            accepted = _accepts(rate, epochs, warmup_epochs=warmup, anneal=anneal)
            assert accepted == (rate <= highest) == (epochs >= Pruner.min_epochs(rate, warmup)), (rate, epochs)


@pytest.mark.filterwarnings("ignore:the full-data annealing epochs are shortened")
def test_every_refusal_names_the_fewest_epochs_and_the_highest_rate_that_work():
    for epochs, rate, warmup in [(3, 0.7, 1), (1, 0.3, 1), (2, 0.5, 1), (10, 0.9, 2), (16, 0.95, 1)]:
        with pytest.raises(ValueError) as refused:
            Pruner(500, epochs, rate=rate, warmup_epochs=warmup)
        message = str(refused.value)
        fewest, highest = Pruner.min_epochs(rate, warmup), Pruner.max_rate(epochs, warmup)
        assert f"needs at least {fewest} epochs" in message and f"is {highest};" in message
        assert "\n" not in message
        Pruner(500, fewest, rate=rate, warmup_epochs=warmup)  # what it names does work
        if highest > 0:
            Pruner(500, epochs, rate=highest, warmup_epochs=warmup)


@pytest.mark.parametrize("epochs", [4, 5, 6, 7, 8, 9, 10, 11, 12, 16])
def test_the_readme_rate_is_met_at_every_epoch_count_from_its_minimum(epochs):
    """rate 0.7 with the default warm-up and anneal: refused at 6 and 10 epochs before (the 0.125 annealing
    window rounds up to 1 and then 2 epochs), met within 0.005 at every count from Pruner.min_epochs(0.7) = 4.
    Where the window had to shrink, the run says so."""
    assert Pruner.min_epochs(0.7) == 4
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pruner = Pruner(500, epochs, rate=0.7, selector="random", seed=epochs)
    asked = math.ceil(0.125 * epochs)
    old_rule_fits = 0.7 * epochs / (epochs - 1 - asked) < 1 if epochs - 1 - asked > 0 else False
    assert (pruner.schedule_note is None) == old_rule_fits
    assert [str(w.message) for w in caught] == ([] if old_rule_fits else [pruner.schedule_note])
    if not old_rule_fits:
        assert "shortened from" in pruner.schedule_note
    forwards = 0
    for epoch in range(epochs):
        plan = pruner.plan(epoch)
        pruner.observe(plan.indices, SampleStats(torch.rand(len(plan))), epoch)
        forwards += len(plan)
    assert 1 - forwards / (epochs * 500) == pytest.approx(0.7, abs=0.005)


@pytest.mark.parametrize("selector", ["random", "eps_greedy", "infobatch"])
def test_settings_that_fit_as_asked_keep_their_schedule_and_plans(selector):
    """The annealing window only gives way where the rate could not be reached before: settings that fitted
    keep the ceil(anneal * epochs) window, so the same samples are chosen (recorded benchmark rows stay
    reproducible)."""
    for epochs in range(2, 30):
        for rate in RATES:
            asked = math.ceil(0.125 * epochs)
            pruned = epochs - 1 - asked
            if pruned <= 0 or rate * epochs / pruned >= 1:
                continue
            with warnings.catch_warnings():
                warnings.simplefilter("error")  # no note: nothing shortened
                pruner = Pruner(100, epochs, rate=rate, selector=selector)
            assert pruner.first_annealed_epoch == epochs - asked
            assert pruner.epoch_rate == rate * epochs / pruned
