"""A zoo of common architectures, defined here with seeded weights (no downloads), for the
model-coverage tests (tests/test_zoo.py): each is named by `model.factory._target_`, e.g.
`model.factory._target_=zoo_models.vit_tiny`."""

from __future__ import annotations

import torch
from torch import nn

# --- a small vision transformer ----------------------------------------------------------------


class _Block(nn.Module):
    """A pre-norm transformer block: x + attention(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp), nn.GELU(), nn.Linear(mlp, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.norm1(x)
        x = x + self.attn(y, y, y, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


class TinyViT(nn.Module):
    """4x4 patches of a 3x32x32 image (64 tokens), two pre-norm blocks of width 64 with
    nn.MultiheadAttention (4 heads), LayerNorm and GELU, mean over the tokens, 10 classes.
    Its attention reshapes to batch x heads, which a batch-dynamic export keeps symbolic
    (`4*s77`): the case of issue 32."""

    def __init__(self, width: int = 64, heads: int = 4, depth: int = 2, classes: int = 10):
        super().__init__()
        self.patch = nn.Conv2d(3, width, kernel_size=4, stride=4)
        self.pos = nn.Parameter(0.02 * torch.randn(1, 64, width))
        self.blocks = nn.Sequential(*[_Block(width, heads, 2 * width) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch(x).flatten(2).transpose(1, 2) + self.pos
        return self.head(self.norm(self.blocks(tokens)).mean(dim=1))


def vit_tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyViT().eval()


# --- a Conv1d keyword spotter ------------------------------------------------------------------


class KwsConv1d(nn.Module):
    """40 MFCC coefficients x 49 frames (input 1x40x49): Conv1d/BatchNorm/ReLU layers over
    time, a mean over time, 12 keywords."""

    def __init__(self, mfcc: int = 40, width: int = 64, classes: int = 12):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv1d(mfcc, width, 5, padding=2),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, stride=2, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
            nn.Conv1d(width, width, 3, padding=1),
            nn.BatchNorm1d(width),
            nn.ReLU(),
        )
        self.head = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).mean(dim=-1))


def kws_conv1d() -> nn.Module:
    torch.manual_seed(0)
    model = KwsConv1d()
    with torch.no_grad():  # running statistics other than the identity, so BatchNorm folds into something
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
            bn.running_mean.uniform_(-0.2, 0.2)
            bn.running_var.uniform_(0.5, 2.0)
    return model.eval()


# --- a detector with two outputs (tests/test_outputs.py) ----------------------------------------


class TwoHeadDetector(nn.Module):
    """A detector's shape on a digits image (1x8x8): a small conv body, then two heads from
    the same features: class logits (N, classes) and box offsets (N, 4). `as_dict` returns
    them as {"scores": ..., "boxes": ...} instead of a tuple."""

    def __init__(self, classes: int = 10, as_dict: bool = False):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 16, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AvgPool2d(4),
            nn.Flatten(),
        )
        self.scores = nn.Linear(16, classes)
        self.boxes = nn.Linear(16, 4)
        self.as_dict = as_dict

    def forward(self, x: torch.Tensor):
        features = self.body(x)
        scores, boxes = self.scores(features), torch.sigmoid(self.boxes(features))
        return {"scores": scores, "boxes": boxes} if self.as_dict else (scores, boxes)


def detector() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeadDetector().eval()


def detector_dict() -> nn.Module:
    torch.manual_seed(0)
    return TwoHeadDetector(as_dict=True).eval()


# --- an LSTM keyword spotter ---------------------------------------------------------------------


class KwsLstm(nn.Module):
    """Frames of 10 MFCC coefficients (input frames x 10), one LSTM layer of 64, the last step's
    state to 12 keywords."""

    def __init__(self, mfcc: int = 10, hidden: int = 64, classes: int = 12):
        super().__init__()
        self.lstm = nn.LSTM(mfcc, hidden, batch_first=True)
        self.head = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x)
        return self.head(out[:, -1])


def kws_lstm() -> nn.Module:
    torch.manual_seed(0)
    return KwsLstm().eval()


# --- a MobileNetV3-style network: depthwise-separable, squeeze-excite, hardswish ---------------


class _SqueezeExcite(nn.Module):
    def __init__(self, channels: int, squeeze: int):
        super().__init__()
        self.reduce = nn.Conv2d(channels, squeeze, 1)
        self.expand = nn.Conv2d(squeeze, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.mean((2, 3), keepdim=True)
        return x * nn.functional.hardsigmoid(self.expand(nn.functional.relu(self.reduce(s))))


class _Bneck(nn.Module):
    """MobileNetV3's inverted residual: expand 1x1, depthwise 3x3, squeeze-excite, project."""

    def __init__(self, channels: int, expanded: int):
        super().__init__()
        self.expand = nn.Sequential(
            nn.Conv2d(channels, expanded, 1, bias=False), nn.BatchNorm2d(expanded), nn.Hardswish()
        )
        self.depthwise = nn.Sequential(
            nn.Conv2d(expanded, expanded, 3, padding=1, groups=expanded, bias=False),
            nn.BatchNorm2d(expanded),
            nn.Hardswish(),
        )
        self.se = _SqueezeExcite(expanded, expanded // 4)
        self.project = nn.Sequential(nn.Conv2d(expanded, channels, 1, bias=False), nn.BatchNorm2d(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.se(self.depthwise(self.expand(x))))


class MobileNetV3Block(nn.Module):
    """A 3x64x64 image: a strided stem with hardswish, two inverted residual blocks with
    squeeze-excite, global pooling, 10 classes."""

    def __init__(self, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()
        )
        self.blocks = nn.Sequential(_Bneck(16, 64), _Bneck(16, 48))
        self.head = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)).mean((2, 3)))


def mobilenet_v3_block() -> nn.Module:
    torch.manual_seed(0)
    return _randomized_norms(MobileNetV3Block()).eval()


# --- a small U-Net: nearest upsampling, skip concatenation --------------------------------------


def _conv(cin: int, cout: int) -> nn.Module:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.ReLU())


class TinyUNet(nn.Module):
    """A 1x32x32 image to a 2-class mask of the same size: two levels down (max pooling), up by
    nearest upsampling, each level's features concatenated back."""

    def __init__(self):
        super().__init__()
        self.down1, self.down2, self.bottom = _conv(1, 8), _conv(8, 16), _conv(16, 32)
        self.up2, self.up1 = _conv(32 + 16, 16), _conv(16 + 8, 8)
        self.out = nn.Conv2d(8, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(nn.functional.max_pool2d(d1, 2))
        b = self.bottom(nn.functional.max_pool2d(d2, 2))
        u2 = self.up2(torch.cat([nn.functional.interpolate(b, scale_factor=2.0, mode="nearest"), d2], dim=1))
        u1 = self.up1(torch.cat([nn.functional.interpolate(u2, scale_factor=2.0, mode="nearest"), d1], dim=1))
        return self.out(u1)


def unet_tiny() -> nn.Module:
    torch.manual_seed(0)
    return TinyUNet().eval()


# --- several inputs --------------------------------------------------------------------------------


class ImageAndFeatures(nn.Module):
    """Two inputs: a 1x16x16 image through a conv body and 8 side features through a linear
    layer, concatenated into 5 classes."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.side = nn.Sequential(nn.Linear(8, 8), nn.ReLU())
        self.head = nn.Linear(16, 5)

    def forward(self, image: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.body(image).flatten(1), self.side(features)], dim=1))


def two_inputs() -> nn.Module:
    torch.manual_seed(0)
    return ImageAndFeatures().eval()


# --- a full-size network: MobileNetV2 1.0 ----------------------------------------------------------


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Module:
    layers = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([nn.ReLU6()] if relu else []))


class _InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        expand_layer = [_conv_bn(cin, hidden, 1)] if expand != 1 else []
        self.conv = nn.Sequential(
            *expand_layer,
            _conv_bn(hidden, hidden, 3, stride, groups=hidden),
            _conv_bn(hidden, cout, 1, relu=False),
        )
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 1.0 as torchvision defines it (3.5 M parameters, 1000 classes, 224x224):
    written out here because no torchvision wheel works beside the pinned CPU torch 2.13.0."""

    # expansion, output channels, repeats, first stride
    SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2)]
    SETTINGS += [(6, 320, 1, 1)]

    def __init__(self, classes: int = 1000):
        super().__init__()
        layers, cin = [_conv_bn(3, 32, 3, 2)], 32
        for t, c, n, s in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(_conv_bn(cin, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


def mobilenet_v2() -> nn.Module:
    torch.manual_seed(0)
    model = MobileNetV2()
    for m in model.modules():  # torchvision's initialization
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return _randomized_norms(model).eval()


# --- one badly conditioned layer, planted: for the per-layer diagnosis -------------------------


class PlantedOutlier(nn.Module):
    """A 1x8x8 image through three conv + ReLU blocks to 10 classes. The second block's
    convolution has an output channel 100 times the others (and the third reads it 100 times
    weaker, so the float function stays well-conditioned): one per-tensor int8 scale for that
    activation leaves the other channels a few codes. `b2` is the block a diagnosis should name."""

    def __init__(self):
        super().__init__()
        self.b1 = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU())
        self.b2 = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.b3 = nn.Sequential(nn.Conv2d(8, 8, 3), nn.ReLU())
        self.head = nn.Linear(8 * 6 * 6, 10)
        with torch.no_grad():
            self.b2[0].weight[0] *= 100
            self.b2[0].bias[0] = self.b2[0].bias[0].abs() * 100
            self.b3[0].weight[:, 0] /= 100

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.b3(self.b2(self.b1(x))).flatten(1))


def planted_outlier() -> nn.Module:
    torch.manual_seed(0)
    return PlantedOutlier().eval()


def _randomized_norms(model: nn.Module) -> nn.Module:
    """Batch norms with seeded statistics, as a trained network has (fresh ones are identity)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model
