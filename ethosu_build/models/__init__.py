"""Built-in model factories, named by `model.factory._target_`.

Each factory imports torch only when called, so naming one in a config (and fingerprinting
its source during validation) costs nothing.
"""

from __future__ import annotations

from pathlib import Path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DIGITS_CNN_WEIGHTS = WEIGHTS_DIR / "digits_cnn.pt"
DIGITS_GATED_WEIGHTS = WEIGHTS_DIR / "digits_gated.pt"

# The MLPerf Tiny reference architectures, as ExecuTorch defines them.
MLPERF_TINY = {
    "ds_cnn": "DSCNNKWS",
    "mobilenet_v1_025": "MobileNetV1025",
    "resnet8": "ResNet8",
    "deep_autoencoder": "DeepAutoEncoder",
}


def digits_cnn(pretrained: bool = True):
    """A small CNN for scikit-learn's 8x8 digits; trained weights ship with the package
    (made by `python -m ethosu_build.models.train_digits_cnn`)."""
    from .digits_net import DigitsCNN, load_state

    model = DigitsCNN()
    if pretrained:
        model.load_state_dict(load_state(DIGITS_CNN_WEIGHTS))
    return model.eval()


def digits_masked(pretrained: bool = True):
    """DigitsCNN with two inputs of different dtypes: the image (float32) and a bool mask of
    the allowed classes; the digits weights (a model with several inputs)."""
    from .digits_net import DigitsMasked, load_state

    model = DigitsMasked()
    if pretrained:
        model.net.load_state_dict(load_state(DIGITS_CNN_WEIGHTS))
    return model.eval()


def digits_gated(pretrained: bool = True):
    """DigitsCNN's trunk with two heads chosen per image by torch.cond (a model with control
    flow); trained weights ship with the package (`... train_digits_cnn --model gated`)."""
    from .digits_net import DigitsGated, load_state

    model = DigitsGated()
    if pretrained:
        model.load_state_dict(load_state(DIGITS_GATED_WEIGHTS))
    return model.eval()


def mlperf_tiny(arch: str, seed: int = 0):
    """An MLPerf Tiny reference architecture from `executorch.examples.models.mlperf_tiny`
    with weights drawn from `seed` (no trained weights can be downloaded here)."""
    if arch not in MLPERF_TINY:
        raise ValueError(f"arch must be one of {', '.join(MLPERF_TINY)}, got {arch!r}")
    import torch
    from executorch.examples.models import mlperf_tiny as zoo

    torch.manual_seed(int(seed))
    model = getattr(zoo, MLPERF_TINY[arch])()
    _randomize_batchnorm(model, seed)
    return model.eval()


def _randomize_batchnorm(model, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics, as a trained network has; with the
    default (mean 0, var 1, weight 1, bias 0) activations would grow layer by layer and the
    numbers seen after quantization would say little about a real model."""
    import torch

    gen = torch.Generator().manual_seed(int(seed) + 1)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.weight.copy_(torch.rand(n, generator=gen) * 0.5 + 0.75)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
