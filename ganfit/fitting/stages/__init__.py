"""Fitting stages after the landmark stage: the joint (GANFit) stage."""
from __future__ import annotations

from .joint import JointInputError, JointRates, JointStage, JointStageConfig, JointStageResult, JointWeights
from .joint_energy import TERMS, JointEnergy, JointTargets, JointVariables

__all__ = ["JointEnergy", "JointInputError", "JointRates", "JointStage", "JointStageConfig", "JointStageResult",
           "JointTargets", "JointVariables", "JointWeights", "TERMS"]
