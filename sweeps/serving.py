"""The pyfunc form of a registered VAE (MLflow "models from code"): this file is the model.

    model = mlflow.pyfunc.load_model("models:/celeba-vae@champion")
    z = model.predict(images)                                   # (N, latent_dim) E[z|x]
    x = model.predict(images, params={"output": "reconstruction"})  # images, in [0, 1]

`images`: uint8 pixels at the model's size, (N, C, H, W) as torch has them or (N, H, W, C) as
a stack of PIL images (`np.stack([np.asarray(im) for im in pil_images])`) has them; a
reconstruction comes back in the layout given, float32 in [0, 1]. The weights are read from
the safetensors checkpoint by vae_core (installed), never unpickled. For the VAE object itself
use `sweeps.registry.load_model("celeba-vae@champion")`.
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
        if output not in ("latent", "reconstruction"):
            raise ValueError(
                f"params.output: got {output!r}; expected 'latent' or 'reconstruction'"
            )
        x, channels_last = channels_first(np.asarray(model_input), self.model.image_shape)
        with torch.no_grad():
            y = self.model.coding.encode(torch.as_tensor(x), dequantize=False)
            if output == "latent":
                return self.model.encode(y).mode().numpy()
            images = self.model.reconstruct(y).numpy()  # [0, 1]
        return images.transpose(0, 2, 3, 1) if channels_last else images


def channels_first(images: np.ndarray, shape: tuple[int, int, int]) -> tuple[np.ndarray, bool]:
    """uint8 (N, C, H, W) as given, or from (N, H, W, C) (and (N, H, W) when C is 1); and
    whether it was channels-last. Anything else: one line saying what to pass."""
    c, h, w = shape
    if images.ndim == 3 and c == 1 and images.shape[1:] == (h, w):
        return images[:, None], False
    if images.ndim == 4 and images.shape[1:] == (c, h, w):
        return images, False
    if images.ndim == 4 and images.shape[1:] == (h, w, c):
        return np.ascontiguousarray(images.transpose(0, 3, 1, 2)), True
    raise ValueError(
        f"expected uint8 images (N, {c}, {h}, {w}) or (N, {h}, {w}, {c}) for this model; "
        f"got an array of shape {images.shape}"
    )


mlflow.models.set_model(VAEPyfunc())
