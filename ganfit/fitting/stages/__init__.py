"""Fitting stages: the `Stage` protocol (`base`), the landmark stage's adapter (`landmarks`) and the joint (GANFit)
stage (`joint`, its adapter `joint_adapter`)."""
from __future__ import annotations

from .base import Stage, StageOutcome
from .joint import JointInputError, JointRates, JointStage, JointStageConfig, JointStageResult, JointWeights
from .joint_energy import TERMS, JointEnergy, JointTargets, JointVariables

__all__ = ["JointEnergy", "JointInputError", "JointRates", "JointStage", "JointStageConfig", "JointStageResult",
           "JointTargets", "JointVariables", "JointWeights", "Stage", "StageOutcome", "TERMS"]
