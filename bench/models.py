"""Benchmark models, torchvision-free: ResNet-50 and a BERT-base encoder layer.

Weights are drawn at random (PyTorch's default initialisation, seeded) and magnitude-pruned
per layer: in every ``nn.Linear`` / ``nn.Conv2d`` weight the ``sparsity`` fraction of entries
with the smallest ``|w|`` (over the whole weight tensor) is set to zero. The ResNet's batch-norm
statistics are then calibrated on random images, so activations stay O(1) through 50 layers.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


# ---------------------------------------------------------------- ResNet-50

class Bottleneck(nn.Module):
    """relu(x' + bn(conv1x1(relu(bn(conv3x3_s(relu(bn(conv1x1(x))))))))), x' the shortcut."""
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int = 1):
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        return F.relu(self.bn3(self.conv3(y)) + self.shortcut(x))


class ResNet50(nn.Module):
    """ResNet-50 (v1.5: stride on the 3x3 conv). ``width`` scales every stage (64 = standard)."""

    def __init__(self, num_classes: int = 1000, width: int = 64, blocks=(3, 4, 6, 3)):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], width
        for i, n in enumerate(blocks):
            w = width * 2 ** i
            layers = []
            for j in range(n):
                layers.append(Bottleneck(cin, w, 2 if (j == 0 and i > 0) else 1))
                cin = w * Bottleneck.expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = self.stages(self.stem(x))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------- BERT-base encoder layer

class EncoderLayer(nn.Module):
    """A post-LN Transformer encoder layer (BERT): on x (B, S, H),

        a = softmax(Q K^T / sqrt(d)) V per head,  [Q K V] = x Wqkv^T + bqkv
        x = LN(x + a Wo^T + bo);  x = LN(x + gelu(x W1^T + b1) W2^T + b2)
    """

    def __init__(self, hidden: int = 768, heads: int = 12, ffn: int = 3072):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden ({hidden}) must be a multiple of heads ({heads})")
        self.hidden, self.heads = hidden, heads
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.ln1 = nn.LayerNorm(hidden)
        self.ffn1 = nn.Linear(hidden, ffn)
        self.ffn2 = nn.Linear(ffn, hidden)
        self.ln2 = nn.LayerNorm(hidden)

    def forward(self, x):
        B, S, H = x.shape
        q, k, v = self.qkv(x).view(B, S, 3, self.heads, H // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, S, H)
        x = self.ln1(x + self.out(a))
        return self.ln2(x + self.ffn2(F.gelu(self.ffn1(x))))


# ---------------------------------------------------------------- pruning

@torch.no_grad()
def magnitude_prune_(model: nn.Module, sparsity: float, kinds=(nn.Linear, nn.Conv2d)) -> nn.Module:
    """Zero the ``sparsity`` fraction of smallest-|w| entries of every weight of ``kinds``."""
    if not 0.0 <= sparsity < 1.0:
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity}")
    for m in model.modules():
        if isinstance(m, kinds):
            w = m.weight.view(-1)
            drop = int(round(sparsity * w.numel()))
            if drop:
                w[w.abs().argsort()[:drop]] = 0
    return model


@torch.no_grad()
def calibrate_batchnorm_(model: nn.Module, inputs: torch.Tensor, passes: int = 2) -> nn.Module:
    """Set batch-norm running statistics to the mean/variance seen on ``inputs``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None                  # cumulative average over the passes
    model.train()
    for _ in range(passes):
        model(inputs)
    model.eval()
    return model


def resnet50(sparsity: float = 0.9, seed: int = 0, device="cpu", width: int = 64,
             num_classes: int = 1000, calib_batch: int = 8, resolution: int = 224) -> ResNet50:
    """A random ResNet-50, pruned to ``sparsity`` (convolutions and fc), in eval mode."""
    torch.manual_seed(seed)
    model = ResNet50(num_classes, width).to(device)
    magnitude_prune_(model, sparsity)
    g = torch.Generator(device=device).manual_seed(seed + 1)
    images = torch.randn(calib_batch, 3, resolution, resolution, device=device, generator=g)
    return calibrate_batchnorm_(model, images)


def bert_layer(sparsity: float = 0.9, seed: int = 0, device="cpu", hidden: int = 768,
               heads: int = 12, ffn: int = 3072) -> EncoderLayer:
    """A random BERT-base-sized encoder layer, its four Linears pruned to ``sparsity``."""
    torch.manual_seed(seed)
    return magnitude_prune_(EncoderLayer(hidden, heads, ffn).to(device), sparsity).eval()


def weight_sparsity(model: nn.Module, kinds=(nn.Linear, nn.Conv2d)) -> float:
    """Fraction of zeros over all weights of ``kinds``."""
    zeros = total = 0
    for m in model.modules():
        if isinstance(m, kinds):
            zeros += int((m.weight == 0).sum())
            total += m.weight.numel()
    return zeros / max(1, total)


__all__ = ["Bottleneck", "EncoderLayer", "ResNet50", "bert_layer", "calibrate_batchnorm_",
           "magnitude_prune_", "resnet50", "weight_sparsity"]
