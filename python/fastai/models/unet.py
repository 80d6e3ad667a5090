"""fastai 0.7's U-Net pieces (`fastai.models.unet`): `UnetBlock` (an up-sampling decoder step
joined with an encoder activation), `SaveFeatures` (a forward hook keeping a module's output)
and `DynamicUnet`, which builds its decoder on the first forward pass from the activations it
saw in the encoder."""
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


def get_sfs_idxs(sfs, last=True):
    """Indexes of the saved encoder activations the decoder joins: with `last`, those just
    before the spatial size changes (plus the first one if the size changes right after it);
    otherwise all of them."""
    if not last:
        return list(range(len(sfs)))
    sizes = np.array([s.features.size()[-1] for s in sfs])
    idxs = [int(i) for i in np.nonzero(sizes[:-1] != sizes[1:])[0]]
    if sizes[0] != sizes[1]:
        # fastai 0.7 prepends 0 although it is then already listed, so such an encoder gets
        # two decoder blocks joining activation 0; kept, so that saved U-Nets load.
        idxs = [0] + idxs
    return idxs


def conv_bn_relu(in_c, out_c, kernel_size, stride, padding):
    """[Conv2d, ReLU, BatchNorm2d] (in that order, despite the name, as in fastai 0.7)."""
    return [nn.Conv2d(in_c, out_c, kernel_size=kernel_size, stride=stride, padding=padding),
            nn.ReLU(), nn.BatchNorm2d(out_c)]


class UnetBlock(nn.Module):
    """Doubles the spatial size of `up_in` (transposed conv to half its channels), concatenates
    the encoder activation `x_in`, then two 3x3 convs with ReLU and a BatchNorm."""

    def __init__(self, up_in_c, x_in_c):
        super().__init__()
        mid = x_in_c + up_in_c // 2
        self.upconv = nn.ConvTranspose2d(up_in_c, up_in_c // 2, 2, 2)
        self.conv1 = nn.Conv2d(mid, mid // 2, 3, 1, 1)
        self.conv2 = nn.Conv2d(mid // 2, mid // 2, 3, 1, 1)
        self.bn = nn.BatchNorm2d(mid // 2)

    def forward(self, up_in, x_in):
        x = torch.cat([self.upconv(up_in), x_in], dim=1)
        return self.bn(F.relu(self.conv2(F.relu(self.conv1(x)))))


class SaveFeatures:
    """Keeps the last output of module `m` in `.features` (a forward hook); `remove()` unhooks."""
    features = None

    def __init__(self, m):
        self.hook = m.register_forward_hook(self.hook_fn)

    def hook_fn(self, module, input, output):
        self.features = output

    def remove(self):
        self.hook.remove()


class DynamicUnet(nn.Module):
    """A U-Net around any indexable `encoder` (e.g. `nn.Sequential(*cut_model(resnet34(True), 8))`):
    the middle convs, one `UnetBlock` per joined activation, an extra 2x up-sampling when the
    encoder halves the input at once, and a 1x1 conv to `n_classes` are created on the first
    call, sized from what the encoder produced (so call it once before building an optimiser)."""

    def __init__(self, encoder, last=True, n_classes=3):
        super().__init__()
        self.encoder = encoder
        self.n_children = len(list(encoder.children()))
        self.sfs = [SaveFeatures(encoder[i]) for i in range(self.n_children)]
        self.last = last
        self.n_classes = n_classes

    def _build_middle(self, x):
        self.sfs_szs = [s.features.size() for s in self.sfs]
        self.sfs_idxs = get_sfs_idxs(self.sfs, self.last)
        c = self.sfs_szs[-1][1]
        self.middle_conv = nn.Sequential(*conv_bn_relu(c, c * 2, 3, 1, 1),
                                         *conv_bn_relu(c * 2, c, 3, 1, 1)).to(x.device, x.dtype)

    def _build_up(self, x, imsize):
        like = dict(device=x.device, dtype=x.dtype)
        probe = x.detach()
        blocks = []
        with torch.no_grad():
            for idx in self.sfs_idxs[::-1]:
                block = UnetBlock(int(probe.size(1)), int(self.sfs_szs[idx][1])).to(**like)
                blocks.append(block)
                probe = block(probe, self.sfs[idx].features)
        self.upmodel = nn.Sequential(*blocks)
        out_c = self.upmodel[-1].conv2.out_channels
        if tuple(imsize) != tuple(self.sfs_szs[0][-2:]):
            self.extra_block = nn.ConvTranspose2d(out_c, out_c, 2, 2).to(**like)
        self.final_conv = nn.Conv2d(out_c, self.n_classes, 1).to(**like)

    def forward(self, x):
        imsize = x.size()[-2:]
        x = F.relu(self.encoder(x))
        if not hasattr(self, "middle_conv"):
            self._build_middle(x)
        x = self.middle_conv(x)
        if not hasattr(self, "upmodel"):
            self._build_up(x, imsize)
        for block, idx in zip(self.upmodel, self.sfs_idxs[::-1]):
            x = block(x, self.sfs[idx].features)
        if hasattr(self, "extra_block"):
            x = self.extra_block(x)
        return self.final_conv(x)


__all__ = ["get_sfs_idxs", "conv_bn_relu", "UnetBlock", "SaveFeatures", "DynamicUnet"]
