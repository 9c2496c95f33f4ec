"""Fine-tuning the segmentation ControlNet per dataset (`scripts/finetune_controlnet.py`)."""

from .examples import ConditionedExamples, ControlNetTrainingData
from .module import ControlNetFineTuning

__all__ = ["ConditionedExamples", "ControlNetFineTuning", "ControlNetTrainingData"]
