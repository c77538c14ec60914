"""The pyfunc form of a registered VAE (MLflow "models from code"): this file is the model.

    model = mlflow.pyfunc.load_model("models:/celeba-vae@champion")
    z = model.predict(images)                                   # (N, latent_dim) E[z|x]
    x = model.predict(images, params={"output": "reconstruction"})  # images, in [0, 1]

`images`: uint8 pixels at the model's size, (N, C, H, W) as torch has them or (N, H, W, C) as
a stack of PIL images (`np.stack([np.asarray(im) for im in pil_images])`) has them; a
reconstruction comes back in the layout given, float32 in [0, 1]. The weights are read from
the safetensors checkpoint by vae_core (installed), never unpickled, and only if their sha256
is the one saved when the model was logged (model_config.weights_sha256 in its MLmodel). For
the VAE object itself use `sweeps.registry.load_model("celeba-vae@champion")`, which checks
the hash the registry keeps.
"""

from __future__ import annotations

import mlflow
import numpy as np
import torch


class VAEPyfunc(mlflow.pyfunc.PythonModel):
    def load_context(self, context) -> None:
        from vae_core.checkpoint import file_sha256, load_model

        path = context.artifacts["checkpoint"]
        expected = (context.model_config or {}).get("weights_sha256")  # None: logged before
        if expected is not None and (found := file_sha256(path)) != expected:
            raise ValueError(
                f"{path}: sha256 {found}, the model was logged with sha256 {expected} "
                "(model_config.weights_sha256 in its MLmodel): its weights were changed "
                "after it was logged, refused"
            )
        self.model = load_model(path)

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
