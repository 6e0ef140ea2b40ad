"""Selectors by name. A new selector is one file plus one line here."""

from ssl_emp.pruning.selectors.base import Selector
from ssl_emp.pruning.selectors.central import CentralSelector
from ssl_emp.pruning.selectors.coverage import CoverageSelector
from ssl_emp.pruning.selectors.eps_greedy import EpsGreedySelector
from ssl_emp.pruning.selectors.full import FullSelector
from ssl_emp.pruning.selectors.infobatch import InfoBatchSelector
from ssl_emp.pruning.selectors.prior import PriorSelector
from ssl_emp.pruning.selectors.random import RandomSelector
from ssl_emp.pruning.selectors.rs2 import RS2Selector
from ssl_emp.pruning.selectors.stratified import StratifiedSelector
from ssl_emp.pruning.selectors.topk import TopKSelector

SELECTORS: dict[str, type[Selector]] = {
    "full": FullSelector,
    "random": RandomSelector,
    "rs2": RS2Selector,
    "infobatch": InfoBatchSelector,
    "topk": TopKSelector,
    "eps_greedy": EpsGreedySelector,
    "coverage": CoverageSelector,
    "stratified": StratifiedSelector,
    "central": CentralSelector,
    "prior": PriorSelector,
}

__all__ = ["SELECTORS", "Selector"]
