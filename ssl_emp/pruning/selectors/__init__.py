"""Selectors by name. A new selector is one file plus one line here. Each class loads on first use, so the names
are known without torch (the config checks them before it loads)."""

from ssl_emp.pruning.registry import LazyRegistry

SELECTORS = LazyRegistry(
    {
        "full": "ssl_emp.pruning.selectors.full:FullSelector",
        "random": "ssl_emp.pruning.selectors.random:RandomSelector",
        "rs2": "ssl_emp.pruning.selectors.rs2:RS2Selector",
        "infobatch": "ssl_emp.pruning.selectors.infobatch:InfoBatchSelector",
        "topk": "ssl_emp.pruning.selectors.topk:TopKSelector",
        "eps_greedy": "ssl_emp.pruning.selectors.eps_greedy:EpsGreedySelector",
        "coverage": "ssl_emp.pruning.selectors.coverage:CoverageSelector",
        "stratified": "ssl_emp.pruning.selectors.stratified:StratifiedSelector",
        "central": "ssl_emp.pruning.selectors.central:CentralSelector",
        "prior": "ssl_emp.pruning.selectors.prior:PriorSelector",
    }
)


def __getattr__(name: str):
    if name == "Selector":
        from ssl_emp.pruning.selectors.base import Selector

        return Selector
    raise AttributeError(f"module 'ssl_emp.pruning.selectors' has no attribute '{name}'")


__all__ = ["SELECTORS", "Selector"]
