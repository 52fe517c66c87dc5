"""Faithful PyTorch replicas of torchvision `r3d_18` and pytorchvideo `slow_r50`, for weight-import
parity tests and the PyTorch side of the benchmarks (benchmarks/torch_reference.py).

Why replicas: on the CPU test machines torchvision from PyPI does not import beside the CPU-only
torch wheel, and pytorchvideo's `models` package imports `torchvision.ops` when loaded. These
classes copy the originals' module attribute names, so their `state_dict()` keys and shapes are
the real ones, and their forward passes (kernels, strides, paddings, max-pool padding, ReLU
placement, residual add then ReLU, head pooling) are the real ones. They were checked against
the published sources (torchvision 0.29.1 `models/video/resnet.py`, pytorchvideo 0.1.5
`models/{resnet,stem,head,net}.py`): identical state_dict keys and shapes and identical logits
for the same weights. The tests also assert the published parameter counts (400 classes:
r3d_18 33,371,472; slow_r50 32,454,096), and compare keys with the real library where it imports.

`width_multiplier` scales every stage's channels exactly as our Flax `ResNet3D` does
(`max(1, round(channels * w))`), so "slow_r50 x1/4" has the same parameter count in both
frameworks. Weight initialisation is left at PyTorch's defaults (the parity tests randomise
every parameter and BatchNorm statistic; the benchmarks only time the step).

Needs torch only (`pip install "cmpl_jax[torch]"`); nothing else in cmpl_jax imports this.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

def _width(channels: int, width_multiplier: float) -> int:
  """Channels at a width multiplier, rounded as cmpl_jax.models.resnet3d.ResNet3D does."""
  return max(1, int(round(channels * width_multiplier)))


# --- torchvision.models.video.resnet (VideoResNet with BasicBlock, Conv3DSimple, BasicStem) ---


class Conv3DSimple(nn.Conv3d):
  """3x3x3 conv, padding 1 in T, H and W, no bias; strides all three axes alike."""

  def __init__(self, in_planes: int, out_planes: int, stride: int = 1):
    super().__init__(in_planes, out_planes, kernel_size=(3, 3, 3), stride=stride, padding=1,
                     bias=False)


class BasicBlock(nn.Module):
  """conv1 = (conv, BN, ReLU), conv2 = (conv, BN); out = ReLU(conv2 + downsample(x))."""

  def __init__(self, inplanes: int, planes: int, stride: int = 1,
               downsample: nn.Module | None = None):
    super().__init__()
    self.conv1 = nn.Sequential(Conv3DSimple(inplanes, planes, stride), nn.BatchNorm3d(planes),
                               nn.ReLU(inplace=True))
    self.conv2 = nn.Sequential(Conv3DSimple(planes, planes), nn.BatchNorm3d(planes))
    self.relu = nn.ReLU(inplace=True)
    self.downsample = downsample

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    residual = x if self.downsample is None else self.downsample(x)
    return self.relu(self.conv2(self.conv1(x)) + residual)


class VideoResNet(nn.Module):
  """torchvision's VideoResNet restricted to r3d (BasicBlock + Conv3DSimple + BasicStem)."""

  def __init__(self, layers: Sequence[int] = (2, 2, 2, 2), num_classes: int = 400,
               width_multiplier: float = 1.0, dropout_rate: float = 0.0):
    super().__init__()
    width = lambda c: _width(c, width_multiplier)  # noqa: E731
    self.inplanes = width(64)
    self.stem = nn.Sequential(
        nn.Conv3d(3, self.inplanes, kernel_size=(3, 7, 7), stride=(1, 2, 2), padding=(1, 3, 3),
                  bias=False),
        nn.BatchNorm3d(self.inplanes), nn.ReLU(inplace=True))
    self.layer1 = self._make_layer(width(64), layers[0], stride=1)
    self.layer2 = self._make_layer(width(128), layers[1], stride=2)
    self.layer3 = self._make_layer(width(256), layers[2], stride=2)
    self.layer4 = self._make_layer(width(512), layers[3], stride=2)
    self.avgpool = nn.AdaptiveAvgPool3d((1, 1, 1))
    # torchvision has no dropout; rate 0 (the default) keeps its forward exactly.
    self.dropout = nn.Dropout(dropout_rate)
    self.fc = nn.Linear(width(512), num_classes)

  def _make_layer(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
    downsample = None
    if stride != 1 or self.inplanes != planes:
      downsample = nn.Sequential(
          nn.Conv3d(self.inplanes, planes, kernel_size=1, stride=stride, bias=False),
          nn.BatchNorm3d(planes))
    layers = [BasicBlock(self.inplanes, planes, stride, downsample)]
    self.inplanes = planes
    layers += [BasicBlock(planes, planes) for _ in range(1, blocks)]
    return nn.Sequential(*layers)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.stem(x)
    x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
    return self.fc(self.dropout(self.avgpool(x).flatten(1)))


def r3d_18(num_classes: int = 400, width_multiplier: float = 1.0,
           dropout_rate: float = 0.0) -> VideoResNet:
  return VideoResNet((2, 2, 2, 2), num_classes, width_multiplier, dropout_rate)


# --- pytorchvideo.models (create_resnet with create_res_basic_stem / bottleneck / basic head) ---


class ResNetBasicStem(nn.Module):
  def __init__(self, conv: nn.Module, norm: nn.Module, activation: nn.Module, pool: nn.Module):
    super().__init__()
    self.conv, self.norm, self.activation, self.pool = conv, norm, activation, pool

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    return self.pool(self.activation(self.norm(self.conv(x))))


class BottleneckBlock(nn.Module):
  """conv_a (Tx1x1), norm_a, ReLU, conv_b (1x3x3, strided), norm_b, ReLU, conv_c, norm_c."""

  def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int,
               spatial_stride: int):
    super().__init__()
    self.conv_a = nn.Conv3d(dim_in, dim_inner, kernel_size=(temporal_kernel, 1, 1),
                            stride=(1, 1, 1), padding=(temporal_kernel // 2, 0, 0), bias=False)
    self.norm_a = nn.BatchNorm3d(dim_inner, eps=1e-5, momentum=0.1)
    self.act_a = nn.ReLU()
    self.conv_b = nn.Conv3d(dim_inner, dim_inner, kernel_size=(1, 3, 3),
                            stride=(1, spatial_stride, spatial_stride), padding=(0, 1, 1),
                            bias=False)
    self.norm_b = nn.BatchNorm3d(dim_inner, eps=1e-5, momentum=0.1)
    self.act_b = nn.ReLU()
    self.conv_c = nn.Conv3d(dim_inner, dim_out, kernel_size=(1, 1, 1), bias=False)
    self.norm_c = nn.BatchNorm3d(dim_out, eps=1e-5, momentum=0.1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.act_a(self.norm_a(self.conv_a(x)))
    x = self.act_b(self.norm_b(self.conv_b(x)))
    return self.norm_c(self.conv_c(x))


class ResBlock(nn.Module):
  """ReLU(branch1(x) + branch2(x)); branch1 = 1x1x1 conv + BN when shape or stride changes."""

  def __init__(self, dim_in: int, dim_inner: int, dim_out: int, temporal_kernel: int,
               spatial_stride: int):
    super().__init__()
    if dim_in != dim_out or spatial_stride != 1:
      self.branch1_conv = nn.Conv3d(dim_in, dim_out, kernel_size=(1, 1, 1),
                                    stride=(1, spatial_stride, spatial_stride), bias=False)
      self.branch1_norm = nn.BatchNorm3d(dim_out, eps=1e-5, momentum=0.1)
    else:
      self.branch1_conv = self.branch1_norm = None
    self.branch2 = BottleneckBlock(dim_in, dim_inner, dim_out, temporal_kernel, spatial_stride)
    self.activation = nn.ReLU()

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    shortcut = x if self.branch1_conv is None else self.branch1_norm(self.branch1_conv(x))
    return self.activation(shortcut + self.branch2(x))


class ResStage(nn.Module):
  def __init__(self, res_blocks: nn.ModuleList):
    super().__init__()
    self.res_blocks = res_blocks

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for block in self.res_blocks:
      x = block(x)
    return x


class ResNetBasicHead(nn.Module):
  """AvgPool3d(kernel) -> dropout -> per-position Linear -> global average (pytorchvideo order)."""

  def __init__(self, in_features: int, num_classes: int,
               pool_kernel_size: Sequence[int] | None, dropout_rate: float = 0.5):
    super().__init__()
    # None: global average pooling at any clip size (what our Flax head does).
    self.pool = (nn.AdaptiveAvgPool3d(1) if pool_kernel_size is None else
                 nn.AvgPool3d(kernel_size=tuple(pool_kernel_size), stride=(1, 1, 1),
                              padding=(0, 0, 0)))
    self.dropout = nn.Dropout(dropout_rate)
    self.proj = nn.Linear(in_features, num_classes)
    self.output_pool = nn.AdaptiveAvgPool3d(1)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    x = self.dropout(self.pool(x))
    x = self.proj(x.permute((0, 2, 3, 4, 1))).permute((0, 4, 1, 2, 3))
    return self.output_pool(x).view(x.shape[0], -1)


class Net(nn.Module):
  def __init__(self, blocks: nn.ModuleList):
    super().__init__()
    self.blocks = blocks

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    for block in self.blocks:
      x = block(x)
    return x


def slow_r50(num_classes: int = 400, head_pool_kernel_size: Sequence[int] | None = (8, 7, 7),
             width_multiplier: float = 1.0, dropout_rate: float = 0.5) -> Net:
  """pytorchvideo.models.hub.slow_r50 (= create_resnet(stem_conv_kernel_size=(1, 7, 7),
  head_pool_kernel_size=(8, 7, 7), model_depth=50)).

  The real head average-pools with a fixed (8, 7, 7) kernel, i.e. global pooling only for
  8 x 224 x 224 clips; pass the final feature-map size (T, H/32, W/32) for other clip sizes so
  the head is global pooling, as in our Flax model (or None: global pooling at any size).
  """
  stem_width = _width(64, width_multiplier)
  stem = ResNetBasicStem(
      conv=nn.Conv3d(3, stem_width, kernel_size=(1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3),
                     bias=False),
      norm=nn.BatchNorm3d(stem_width, eps=1e-5, momentum=0.1), activation=nn.ReLU(),
      pool=nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)))
  blocks = [stem]
  dim_in = stem_width
  for stage, (depth, temporal_kernel) in enumerate(zip((3, 4, 6, 3), (1, 1, 3, 3))):
    spatial_stride = 1 if stage == 0 else 2
    dim_inner = _width(64 * 2 ** stage, width_multiplier)
    dim_out = 4 * dim_inner
    res_blocks = [ResBlock(dim_in if i == 0 else dim_out, dim_inner, dim_out, temporal_kernel,
                           spatial_stride if i == 0 else 1) for i in range(depth)]
    blocks.append(ResStage(nn.ModuleList(res_blocks)))
    dim_in = dim_out
  blocks.append(ResNetBasicHead(dim_in, num_classes, head_pool_kernel_size, dropout_rate))
  return Net(nn.ModuleList(blocks))
