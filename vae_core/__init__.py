"""vae_core: variational autoencoders in plain PyTorch.

Config -> build_model -> fit, with beta-free metrics (val_bpd) and safetensors checkpoints.
Depends on torch, torchvision and small libraries only; ray, optuna and mlflow live in sweeps/.
"""

from vae_core.checkpoint import Checkpoint, load_model, read_checkpoint, save_checkpoint
from vae_core.config import Config, ConfigError, DataConfig, ModelConfig, TrainConfig
from vae_core.data import DatasetNotFoundError, Split, Splits, load_splits
from vae_core.model import VAE, build_model
from vae_core.trainer import DivergenceError, TrainState, fit

__all__ = [
    "VAE",
    "Checkpoint",
    "Config",
    "ConfigError",
    "DataConfig",
    "DatasetNotFoundError",
    "DivergenceError",
    "ModelConfig",
    "Split",
    "Splits",
    "TrainConfig",
    "TrainState",
    "build_model",
    "fit",
    "load_model",
    "load_splits",
    "read_checkpoint",
    "save_checkpoint",
]
