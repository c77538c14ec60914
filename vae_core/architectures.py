"""Encoder/decoder networks, one family per seed tutorial.

- `mlp`: fully connected D-500-500-z, after the TensorFlow MNIST tutorial (Zoltowski), with
  the hidden activation selectable (the tutorial used sigmoid; softplus and relu are common).
- `conv`: 4x4 stride-2 convolutions, 32-32-64-64 channels and a 256-wide bottleneck, after the
  PyTorch CelebA 64 px notebook (its design from Burgess et al., "Understanding disentangling
  in beta-VAE", 2018). Takes 28, 32 and 64 px (any size s * 2^k with 4 <= s <= 7).
- `conv_bn`: 5x5 stride-2 convolutions with batch norm and ReLU, after the TensorFlow CelebA
  128 px model (Royer, "variational auto-encoders", 2017): five blocks for 128 px, four for
  64 px (any size 4 * 2^k with k <= number of channel stages). With `refine` > 0 its last
  upsampling is a batch-norm block of that many channels and a stride-1 3x3 convolution draws
  the pixels at full resolution (ours, not the seed's: the seed's single stride-2 3x3 output
  layer rounds the corners of small shapes; see sweeps/shapes.py).
- `keras_conv`: 3x3 stride-2 convolutions with TensorFlow's 'same' padding, 32-64 channels, a
  16-wide dense layer and separate z_mean / z_log_var heads, mirrored by transposed
  convolutions and a stride-1 output layer: the Keras convolutional VAE with a 2-D latent space
  (Tae, "A Step Up with Convolutional Variational Autoencoders", 2020, after Chollet's Keras
  example). Takes sizes divisible by 2^stages (28, 32, 64 with the default two stages).

`init` re-draws the weights after construction: PyTorch's per-layer defaults, Keras' default
(Glorot-uniform weights, zero biases), or the TF MNIST tutorial's truncated normal.

Encoders map images (B, C, H, W) to (B, 2 * latent_dim): posterior mean and log-variance.
Decoders map z (B, latent_dim) to (B, C, H, W) pre-activation outputs; vae_core.model turns
those into the likelihood's parameters.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

# Conv widths (output channels) per stride-2 stage when the config leaves `widths` unset.
DEFAULT_WIDTHS = {
    "conv": (32, 32, 64, 64),
    "conv_bn": (32, 64, 128, 256, 512),
    "keras_conv": (32, 64),
}
CONV_BOTTLENECK = 256  # the notebook's 256-wide code between convolutions and the linear head
KERAS_DENSE = 16  # the Keras seed's Dense(16, activation='relu') before the z heads
INITS = ("default", "xavier", "truncated_normal")

ACTIVATION_LAYERS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "elu": nn.ELU,
    "softplus": nn.Softplus,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _conv_stages(size: int, max_stages: int) -> tuple[int, int] | None:
    """(stages, final side) for 4x4/stride-2 halvings down to a side of 4..7, or None."""
    for stages in range(1, max_stages + 1):
        side, rest = divmod(size, 2**stages)
        if rest == 0 and 4 <= side <= 7:
            return stages, side
    return None


def _conv_bn_stages(size: int, max_stages: int) -> tuple[int, int] | None:
    """(stages, 4) for 5x5/stride-2 blocks that bring `size` down to exactly 4, or None."""
    for stages in range(1, max_stages + 1):
        if size == 4 * 2**stages:
            return stages, 4
    return None


def _stages(rule, size: int, widths: tuple[int, ...]) -> tuple[int, int]:
    found = rule(size, len(widths))
    if found is None:  # the config's validation says this first, and better
        raise ValueError(f"image size {size} does not fit {len(widths)} stride-2 stages")
    return found


def image_size_error(arch: str, size: int, widths: tuple[int, ...] | None) -> str | None:
    """None if `arch` takes square images of `size` px, else what it does take."""
    if arch == "mlp" or arch not in DEFAULT_WIDTHS:
        return None
    stages = len(widths or DEFAULT_WIDTHS[arch])
    if arch == "conv":
        if _conv_stages(size, stages) is None:
            sizes = sorted({s * 2**k for k in range(1, stages + 1) for s in range(4, 8)})
            return (
                f"the conv architecture with {stages} channel stages takes image sizes "
                f"{sizes} (28, 32 and 64 are the usual ones)"
            )
    elif arch == "keras_conv":
        if size % 2**stages:
            return (
                f"the keras_conv architecture with {stages} channel stages takes image sizes "
                f"divisible by {2**stages} (28, 32 and 64 with the default 2 stages)"
            )
    elif _conv_bn_stages(size, stages) is None:
        sizes = [4 * 2**k for k in range(1, stages + 1)]
        return (
            f"the conv_bn architecture with {stages} channel stages takes image sizes "
            f"{sizes} (64 and 128 are the usual ones)"
        )
    return None


class MLPEncoder(nn.Module):
    def __init__(
        self, channels: int, size: int, latent_dim: int, hidden: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        widths = (channels * size * size, *hidden)
        layers: list[nn.Module] = [nn.Flatten()]
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), ACTIVATION_LAYERS[activation]()]
        layers.append(nn.Linear(widths[-1], 2 * latent_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 2 * latent_dim)


class MLPDecoder(nn.Module):
    def __init__(
        self, channels: int, size: int, latent_dim: int, hidden: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        widths = (latent_dim, *reversed(hidden))
        layers: list[nn.Module] = []
        for w_in, w_out in zip(widths[:-1], widths[1:], strict=True):
            layers += [nn.Linear(w_in, w_out), ACTIVATION_LAYERS[activation]()]
        layers += [
            nn.Linear(widths[-1], channels * size * size),
            nn.Unflatten(1, (channels, size, size)),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, C, H, W)


class ConvEncoder(nn.Module):
    def __init__(
        self, channels: int, size: int, latent_dim: int, widths: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        stages, side = _stages(_conv_stages, size, widths)
        act = ACTIVATION_LAYERS[activation]
        layers: list[nn.Module] = []
        for w_in, w_out in zip((channels, *widths), widths[:stages], strict=False):
            layers += [nn.Conv2d(w_in, w_out, 4, stride=2, padding=1), act()]  # halves H, W
        layers += [
            nn.Conv2d(widths[stages - 1], CONV_BOTTLENECK, side),
            act(),  # (B, 256, 1, 1)
            nn.Flatten(),
            nn.Linear(CONV_BOTTLENECK, 2 * latent_dim),
        ]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 2 * latent_dim)


class ConvDecoder(nn.Module):
    def __init__(
        self, channels: int, size: int, latent_dim: int, widths: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        stages, side = _stages(_conv_stages, size, widths)
        act = ACTIVATION_LAYERS[activation]
        up = widths[:stages][::-1]  # e.g. 64, 64, 32, 32
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, CONV_BOTTLENECK),
            act(),
            nn.Unflatten(1, (CONV_BOTTLENECK, 1, 1)),
            nn.ConvTranspose2d(CONV_BOTTLENECK, up[0], side),
            act(),  # (B, up[0], side, side)
        ]
        for w_in, w_out in zip(up[:-1], up[1:], strict=True):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, stride=2, padding=1), act()]
        layers.append(nn.ConvTranspose2d(up[-1], channels, 4, stride=2, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, C, H, W)


def _bn_block(conv: nn.Module, width: int) -> list[nn.Module]:
    return [conv, nn.BatchNorm2d(width), nn.ReLU()]


class ConvBNEncoder(nn.Module):
    def __init__(
        self, channels: int, size: int, latent_dim: int, widths: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        stages, _ = _stages(_conv_bn_stages, size, widths)
        layers: list[nn.Module] = []
        for w_in, w_out in zip((channels, *widths), widths[:stages], strict=False):
            # 'SAME' padding as in the TF model: 5x5, stride 2, pad 2 halves H and W exactly
            layers += _bn_block(nn.Conv2d(w_in, w_out, 5, stride=2, padding=2, bias=False), w_out)
        layers += [nn.Flatten(), nn.Linear(widths[stages - 1] * 4 * 4, 2 * latent_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, 2 * latent_dim)


def _bn_upsample(w_in: int, w_out: int) -> list[nn.Module]:
    """5x5 stride-2 transposed convolution ('SAME': doubles H and W), batch norm, ReLU."""
    conv = nn.ConvTranspose2d(w_in, w_out, 5, stride=2, padding=2, output_padding=1, bias=False)
    return _bn_block(conv, w_out)


class ConvBNDecoder(nn.Module):
    def __init__(
        self,
        channels: int,
        size: int,
        latent_dim: int,
        widths: tuple[int, ...],
        activation: str,
        refine: int = 0,
    ) -> None:
        super().__init__()
        stages, _ = _stages(_conv_bn_stages, size, widths)
        up = widths[:stages][::-1]
        layers: list[nn.Module] = [nn.Unflatten(1, (latent_dim, 1, 1))]
        layers += _bn_block(nn.ConvTranspose2d(latent_dim, up[0], 4, bias=False), up[0])  # 4x4
        for w_in, w_out in zip(up[:-1], up[1:], strict=True):
            layers += _bn_upsample(w_in, w_out)
        if refine:  # (B, refine, H, W), then each pixel from its 3x3 neighbourhood
            layers += _bn_upsample(up[-1], refine)
            layers.append(nn.Conv2d(refine, channels, 3, padding=1))
        else:  # the seed's output layer
            layers.append(
                nn.ConvTranspose2d(up[-1], channels, 3, stride=2, padding=1, output_padding=1)
            )
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, C, H, W)


class KerasConvEncoder(nn.Module):
    """Conv2D(w, 3, strides=2, padding='same') per width, Flatten, Dense(16), z_mean, z_log_var.

    TF's 'same' padding on an even side pads one row and column after the image, none before
    (PyTorch's padding=1 would pad both sides and shift every window by a pixel).
    """

    def __init__(
        self, channels: int, size: int, latent_dim: int, widths: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        act = ACTIVATION_LAYERS[activation]
        layers: list[nn.Module] = []
        for w_in, w_out in zip((channels, *widths), widths, strict=False):
            layers += [nn.ZeroPad2d((0, 1, 0, 1)), nn.Conv2d(w_in, w_out, 3, stride=2), act()]
        side = size // 2 ** len(widths)
        layers += [nn.Flatten(), nn.Linear(widths[-1] * side * side, KERAS_DENSE), act()]
        self.net = nn.Sequential(*layers)  # (B, 16)
        self.z_mean = nn.Linear(KERAS_DENSE, latent_dim)
        self.z_log_var = nn.Linear(KERAS_DENSE, latent_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.net(x)
        return torch.cat([self.z_mean(h), self.z_log_var(h)], dim=-1)  # (B, 2 * latent_dim)


class KerasConvDecoder(nn.Module):
    """Dense to the encoder's last feature map, Conv2DTranspose(w, 3, strides=2, 'same') per
    width in reverse, then Conv2DTranspose(channels, 3, 'same'): logits or means, (B, C, H, W).

    TF's stride-2 'same' transposed convolution keeps the first 2n of the 2n + 1 rows and
    columns of the full one; the stride-1 output layer crops one on each side (padding=1).
    """

    def __init__(
        self, channels: int, size: int, latent_dim: int, widths: tuple[int, ...], activation: str
    ) -> None:
        super().__init__()
        act = ACTIVATION_LAYERS[activation]
        side = size // 2 ** len(widths)
        layers: list[nn.Module] = [
            nn.Linear(latent_dim, widths[-1] * side * side),
            act(),
            nn.Unflatten(1, (widths[-1], side, side)),
        ]
        for w_in, w_out in zip((widths[-1], *widths[::-1]), widths[::-1], strict=False):
            layers += [
                nn.ConvTranspose2d(w_in, w_out, 3, stride=2),  # n -> 2n + 1
                nn.ZeroPad2d((0, -1, 0, -1)),  # -> 2n: drop the last row and column
                act(),
            ]
        layers.append(nn.ConvTranspose2d(widths[0], channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, C, H, W)


ARCHITECTURES: dict[str, tuple[type[nn.Module], type[nn.Module]]] = {
    "mlp": (MLPEncoder, MLPDecoder),
    "conv": (ConvEncoder, ConvDecoder),
    "conv_bn": (ConvBNEncoder, ConvBNDecoder),
    "keras_conv": (KerasConvEncoder, KerasConvDecoder),
}


@torch.no_grad()
def init_weights(module: nn.Module, scheme: str) -> None:
    """Re-draw the weights and biases of every linear and (transposed) convolution layer.

    default: leave PyTorch's per-layer defaults. xavier: Glorot-uniform weights, zero biases
    (Keras' default; the fans of a transposed convolution are swapped, the bound is the same).
    truncated_normal: weights N(0, 0.1^2) re-drawn outside 2 sd, biases 0.1 (the TF MNIST
    tutorial's weight_variable and bias_variable, from the TensorFlow "Deep MNIST" guide).
    """
    if scheme == "default":
        return
    for layer in module.modules():
        if not isinstance(layer, nn.Linear | nn.Conv2d | nn.ConvTranspose2d):
            continue
        if scheme == "xavier":
            nn.init.xavier_uniform_(layer.weight)
            bias = 0.0
        elif scheme == "truncated_normal":
            nn.init.trunc_normal_(layer.weight, std=0.1, a=-0.2, b=0.2)
            bias = 0.1
        else:
            raise ValueError(f"model.init: got {scheme!r}; expected one of {list(INITS)}")
        if layer.bias is not None:
            layer.bias.fill_(bias)


def build_networks(
    arch: str,
    channels: int,
    size: int,
    latent_dim: int,
    activation: str,
    hidden_dims: tuple[int, ...],
    widths: tuple[int, ...] | None,
    init: str = "default",
    refine: int = 0,
) -> tuple[nn.Module, nn.Module]:
    """The (encoder, decoder) pair of `arch` for square images of `size` px, initialised
    by `init` (one of INITS); `refine` channels end a conv_bn decoder (0: the seed's)."""
    encoder_cls, decoder_cls = ARCHITECTURES[arch]
    shape = hidden_dims if arch == "mlp" else (widths or DEFAULT_WIDTHS[arch])
    extra = {"refine": refine} if refine else {}  # the config allows it on conv_bn only
    pair = (
        encoder_cls(channels, size, latent_dim, shape, activation),
        decoder_cls(channels, size, latent_dim, shape, activation, **extra),
    )
    for network in pair:
        init_weights(network, init)
    return pair
