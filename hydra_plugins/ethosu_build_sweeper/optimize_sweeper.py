"""`hydra/sweeper=optimize`: ethosu-build's optimizing sweeper, a Hydra plugin.

Hydra instantiates sweepers only from the `hydra_plugins` package and imports every module
in it at start-up, for every Hydra app on the machine: this shell stays import-light (no
ethosu_build, no Optuna until a sweep runs) and delegates to ethosu_build.sweep.optimize.
No `from __future__ import annotations`: Hydra executes plugin modules outside sys.modules,
where a dataclass cannot resolve string annotations.
"""

from dataclasses import dataclass

# OmegaConf reads the dataclass's annotations: typing's Optional/Dict, which it knows in every version.
from typing import Any, Dict, Optional  # noqa: UP035

from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig


@dataclass
class OptimizeSweeperConf:
    _target_: str = "hydra_plugins.ethosu_build_sweeper.optimize_sweeper.OptimizeSweeper"
    sampler: str = "tpe"  # tpe | nsga2 | random
    seed: int = 0
    n_trials: int = 20  # builds at most; a point proposed again costs nothing
    n_jobs: int = 1  # trials launched together through the launcher (set hydra.launcher.n_jobs alike)
    # random trials first (nsga2: its population size); null: n_trials // 4, at least 2
    n_startup_trials: Optional[int] = None  # noqa: UP045
    # the space in Hydra's sweep syntax, beside the command line's sweep overrides
    params: Optional[Dict[str, str]] = None  # noqa: UP006, UP045


ConfigStore.instance().store(group="hydra/sweeper", name="optimize", node=OptimizeSweeperConf, provider="ethosu-build")


class OptimizeSweeper(Sweeper):
    def __init__(self, **settings: Any) -> None:
        from ethosu_build.sweep.optimize import Settings

        self.settings = Settings(**settings)
        self.config: DictConfig | None = None
        self.launcher = None
        self.hydra_context: HydraContext | None = None
        self.job_idx = 0

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config = config
        self.hydra_context = hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )

    def sweep(self, arguments: list[str]) -> Any:
        from ethosu_build.sweep.optimize import run

        return run(self, arguments)
