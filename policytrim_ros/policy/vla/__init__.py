"""The compact Vision-Language-Action model.

``configuration_vla`` (VLAConfig, presets) imports neither torch nor transformers;
``modeling_vla`` (VLAModel) and ``instruction`` (InstructionEncoder) do, so import them directly.
"""
from policytrim_ros.policy.vla.configuration_vla import PRESETS, VLAConfig, preset

__all__ = ['PRESETS', 'VLAConfig', 'preset']
