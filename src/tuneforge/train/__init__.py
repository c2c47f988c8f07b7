"""Training: full fine-tuning, LoRA and QLoRA, with SFT, DPO or ORPO, through one loop, with
exact resume.

Public API: ``TrainConfig``/``load_config``/``config_from_dict`` (config, with the data options
nested as a ``tuneforge.data.DataConfig``), ``train(config) -> RunResult`` (a whole run),
``plan_for_run`` (the memory plan a run prints), ``fit`` (the loop on a prepared model),
``prepare_model`` (per method), ``build_objective`` (sft, dpo with its reference, orpo; see
``tuneforge.train.objectives`` and ``tuneforge.train.preference``), ``supervised_loss_sum`` (the
loss with the LM head only at supervised positions). A run stopped by SIGINT/SIGTERM raises
``TrainingInterrupted`` after a checkpoint; one that diverged (NaN, or a collapse to the uniform
distribution) raises ``TrainingDivergedError``.
"""

from tuneforge.train.config import TrainConfig, config_from_dict, dump_config, load_config
from tuneforge.train.guards import TrainingDivergedError
from tuneforge.train.loop import FitResult, TrainingData, fit
from tuneforge.train.loss import supervised_loss_sum, supervised_token_count
from tuneforge.train.methods import PreparedModel, default_target_modules, prepare_model
from tuneforge.train.objectives import Objective, build_objective
from tuneforge.train.parameters import ParameterCounts, count_parameters
from tuneforge.train.planning import plan_for_run
from tuneforge.train.run import RunResult, train
from tuneforge.train.signals import TrainingInterrupted

__all__ = [
    "FitResult",
    "Objective",
    "ParameterCounts",
    "PreparedModel",
    "RunResult",
    "TrainConfig",
    "TrainingData",
    "TrainingDivergedError",
    "TrainingInterrupted",
    "build_objective",
    "config_from_dict",
    "count_parameters",
    "default_target_modules",
    "dump_config",
    "fit",
    "load_config",
    "plan_for_run",
    "prepare_model",
    "supervised_loss_sum",
    "supervised_token_count",
    "train",
]
