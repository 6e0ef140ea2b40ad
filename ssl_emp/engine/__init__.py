from ssl_emp.engine.checkpoint import CheckpointError, load_checkpoint
from ssl_emp.engine.trainer import PretrainResult, Pretrainer, RunDirError, pretrain

__all__ = ["CheckpointError", "load_checkpoint", "PretrainResult", "Pretrainer", "RunDirError", "pretrain"]
