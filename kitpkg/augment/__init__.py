"""Training augmentation in two stages: albumentations in the loader workers (cpu), torch ops on the device (gpu)."""
from .cpu import augment_sample, build_cpu_stage, sample_seed
from .gpu import GpuStage, build_gpu_stage
from .presets import Preset, load_preset, preset_names

__all__ = ["augment_sample", "build_cpu_stage", "sample_seed", "GpuStage", "build_gpu_stage", "Preset", "load_preset",
           "preset_names"]
