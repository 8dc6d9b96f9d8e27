"""The MinkUNet family on MinkowskiEngine, as small tables (layers and planes per stage), as in
MinkowskiEngine's published family (Choy et al., 4D Spatio-Temporal ConvNets, CVPR 2019).

Encoder: a kernel-5 stem, then four stages, each a stride-2 kernel-2 convolution and LAYERS[i] BasicBlocks
of PLANES[i] channels. Decoder: four stages, each a stride-2 kernel-2 transposed convolution to PLANES[i],
concatenation with the encoder features of the same stride (the skip), and LAYERS[i] BasicBlocks. A 1x1
convolution gives the class logits. forward() returns (the last decoder features, the logits).
"""
import torch.nn as nn

from ..minkowski import ME

#            layers (enc1..4, dec1..4)   planes (enc1..4, dec1..4)
FAMILY = {
    "MinkUNet14":  ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 256, 128, 96, 96)),
    "MinkUNet14A": ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 128, 128, 96, 96)),
    "MinkUNet14B": ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 128, 128, 128, 128)),
    "MinkUNet14C": ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 192, 192, 128, 128)),
    "MinkUNet14D": ((1, 1, 1, 1, 1, 1, 1, 1), (32, 64, 128, 256, 384, 384, 384, 384)),
    "MinkUNet18":  ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
    "MinkUNet18A": ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 128, 128, 96, 96)),
    "MinkUNet18B": ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 128, 128, 128, 128)),
    "MinkUNet18D": ((2, 2, 2, 2, 2, 2, 2, 2), (32, 64, 128, 256, 384, 384, 384, 384)),
    "MinkUNet34":  ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
    "MinkUNet34A": ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 64, 64)),
    "MinkUNet34B": ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 64, 32)),
    "MinkUNet34C": ((2, 3, 4, 6, 2, 2, 2, 2), (32, 64, 128, 256, 256, 128, 96, 96)),
}
DEFAULT = "MinkUNet34C"
INIT_DIM = 32


class BasicBlock(nn.Module):
    """Two 3x3x3 convolutions with batch norm and a residual (a 1x1x1 projection when channels change)."""

    def __init__(self, inplanes, planes, bn_momentum=0.1, D=3):
        super().__init__()
        self.conv1 = ME.MinkowskiConvolution(inplanes, planes, kernel_size=3, dimension=D)
        self.bn1 = ME.MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.conv2 = ME.MinkowskiConvolution(planes, planes, kernel_size=3, dimension=D)
        self.bn2 = ME.MinkowskiBatchNorm(planes, momentum=bn_momentum)
        self.relu = ME.MinkowskiReLU(inplace=True)
        self.downsample = None
        if inplanes != planes:
            self.downsample = nn.Sequential(ME.MinkowskiConvolution(inplanes, planes, kernel_size=1, dimension=D),
                                            ME.MinkowskiBatchNorm(planes, momentum=bn_momentum))

    def forward(self, x):
        residual = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + residual)


def _stage(inplanes, planes, blocks):
    return nn.Sequential(*[BasicBlock(inplanes if i == 0 else planes, planes) for i in range(blocks)])


class MinkUNet(nn.Module):
    def __init__(self, in_channels, num_classes, layers, planes, D=3):
        super().__init__()
        self.layers, self.planes = tuple(layers), tuple(planes)
        P, L = planes, layers
        conv = lambda i, o, k, s=1: ME.MinkowskiConvolution(i, o, kernel_size=k, stride=s, dimension=D)  # noqa: E731
        convtr = lambda i, o: ME.MinkowskiConvolutionTranspose(i, o, kernel_size=2, stride=2, dimension=D)  # noqa: E731
        bn = ME.MinkowskiBatchNorm
        self.stem = nn.Sequential(conv(in_channels, INIT_DIM, 5), bn(INIT_DIM), ME.MinkowskiReLU(inplace=True))
        enc_in = [INIT_DIM, P[0], P[1], P[2]]
        self.down = nn.ModuleList([nn.Sequential(conv(c, c, 2, 2), bn(c), ME.MinkowskiReLU(inplace=True))
                                   for c in enc_in])
        self.enc = nn.ModuleList([_stage(enc_in[i], P[i], L[i]) for i in range(4)])
        skips = [P[2], P[1], P[0], INIT_DIM]  # encoder features of the same stride, deepest first
        dec_in = [P[3], P[4], P[5], P[6]]
        self.up = nn.ModuleList([
            nn.Sequential(convtr(dec_in[i], P[4 + i]), bn(P[4 + i]), ME.MinkowskiReLU(inplace=True)) for i in range(4)])
        self.dec = nn.ModuleList([_stage(P[4 + i] + skips[i], P[4 + i], L[4 + i]) for i in range(4)])
        self.final = ME.MinkowskiConvolution(P[7], num_classes, kernel_size=1, bias=True, dimension=D)
        self.feature_dim = P[7]
        for m in self.modules():
            if isinstance(m, ME.MinkowskiConvolution):
                ME.utils.kaiming_normal_(m.kernel, mode="fan_out", nonlinearity="relu")
            if isinstance(m, ME.MinkowskiBatchNorm):
                nn.init.constant_(m.bn.weight, 1)
                nn.init.constant_(m.bn.bias, 0)

    def forward(self, x):
        out = self.stem(x)
        skips = [out]
        for i in range(4):
            out = self.enc[i](self.down[i](out))
            skips.append(out)
        skips.pop()  # the deepest encoder output feeds the decoder directly
        for i in range(4):
            out = ME.cat(self.up[i](out), skips[-1 - i])
            out = self.dec[i](out)
        return out, self.final(out)


def build(name, in_channels, num_classes):
    if name not in FAMILY:
        raise ValueError(f"unknown model {name!r} (expected one of {', '.join(FAMILY)})")
    layers, planes = FAMILY[name]
    return MinkUNet(in_channels, num_classes, layers, planes)
