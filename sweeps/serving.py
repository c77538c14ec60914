"""The pyfunc form of a registered VAE (MLflow "models from code"): this file is the model.

    model = mlflow.pyfunc.load_model("models:/celeba-vae@champion")
    z = model.predict(images)                                   # (N, latent_dim) E[z|x]
    x = model.predict(images, params={"output": "reconstruction"})  # (N, C*H*W) in [0, 1]

`images` are uint8 arrays (N, C, H, W). The weights are read from the safetensors checkpoint
by vae_core (installed), never unpickled. For the VAE object itself use
`sweeps.registry.load_model("celeba-vae@champion")`.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch


class VAEPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from vae_core.checkpoint import load_model

        self.model = load_model(context.artifacts["checkpoint"])

    def predict(self, context, model_input: np.ndarray, params: dict | None = None) -> np.ndarray:
        output = (params or {}).get("output", "latent")
        x = torch.as_tensor(np.asarray(model_input, dtype=np.uint8))
        with torch.no_grad():
            y = self.model.coding.encode(x, dequantize=False)
            if output == "latent":
                return self.model.encode(y).mode().numpy()
            if output == "reconstruction":
                return self.model.reconstruct(y).flatten(1).numpy()
        raise ValueError(f"params.output: got {output!r}; expected 'latent' or 'reconstruction'")


mlflow.models.set_model(VAEPyfunc())
