"""fastai 0.7's model zoo: the architecture functions `f(pre)` that `ConvLearner.pretrained`
takes besides the ResNets the Rust core builds (`resnext50`, `wrn`, `dn121`, `vgg16`,
`inception_4`, `nasnetalarge`, ...), their `model_meta` entries ([cut, lr_cut]) and
`model_features`, and 0.7's helpers `cut_model` and `num_features`.

Each function returns a plain `torch.nn.Module`, laid out as 0.7's so that published weights
and models saved with 0.7 load key for key. Where the weights come from:

* torchvision's ImageNet files (DenseNets, VGG-BN): the torch hub cache, downloaded there when
  absent, exactly as the ResNets' (`_weights.hub_file`); torchvision builds the network, and is
  imported only when one of these is called;
* Inception-v4 and NASNet-A-Large: Cadene's files, through the same hub cache and download;
* fast.ai's converted ResNeXt / WRN / Inception-ResNet-v2 files, which were only ever shipped in
  fast.ai's `weights.tgz` and read from `<fastai package>/weights/`: they are looked up there,
  and when missing `pre=True` raises a FileNotFoundError saying which file to place where
  (`pre=False` always builds, with random weights).
"""
import os
import re

import torch
import torch.nn as nn

from . import _weights
from .exceptions import WeightsError

WEIGHTS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "weights")
# Where fastai 0.7 told users to get the converted weights from (unpacked into WEIGHTS_DIR).
FASTAI_WEIGHTS_ARCHIVE = "http://files.fast.ai/models/weights.tgz"

# torchvision's current ImageNet weight files (the hex fragment starts the file's sha256).
TORCHVISION_FILES = {
    "vgg16_bn": "vgg16_bn-6c64b313.pth",
    "vgg19_bn": "vgg19_bn-c79401a0.pth",
    "densenet121": "densenet121-a639ec97.pth",
    "densenet161": "densenet161-8d451a50.pth",
    "densenet169": "densenet169-b2777c0a.pth",
    "densenet201": "densenet201-c1103571.pth",
}

# The DenseNet files predate PyTorch's ban on dots in module names: `norm.1` is today's `norm1`.
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def package_weights_path(fn):
    return os.path.join(WEIGHTS_DIR, f"{fn}.pth")


def load_package_weights(model, fn):
    """Load `<fastai package>/weights/<fn>.pth` into `model` (keys must match exactly)."""
    path = package_weights_path(fn)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{fn}.pth: pretrained weights not found at {path}. fast.ai published them only in "
            f"its weights archive ({FASTAI_WEIGHTS_ARCHIVE}); place {fn}.pth in {WEIGHTS_DIR}, "
            f"or build with pre=False for random weights.")
    model.load_state_dict(_weights.read_state_dict(path))
    return model


def load_hub_weights(model, url, rename=None):
    """Load the checkpoint at `url` into `model`, through the torch hub cache (downloaded into
    it when absent). `rename` maps each key of the file to the model's."""
    name = url.rstrip("/").rsplit("/", 1)[-1]
    state = _weights.read_state_dict(_weights.hub_file(name, url))
    if rename is not None:
        state = {rename(k): v for k, v in state.items()}
    model.load_state_dict(state)
    return model


def _densenet_key(k):
    return _OLD_DENSENET_KEY.sub(r"\1\2", k)


def _torchvision_model(name, pre):
    try:
        import torchvision.models as tvm
    except ImportError as e:
        raise ImportError(f"{name}: building this architecture needs torchvision "
                          "(pip install torchvision==0.26.0)") from e
    model = getattr(tvm, name)(weights=None)
    if pre:
        file = TORCHVISION_FILES[name]
        load_hub_weights(model, _weights._base_url() + file,
                         rename=_densenet_key if name.startswith("densenet") else None)
    return model


def _children(m):
    return list(m.children())


# --- the architecture functions (0.7's names and signature `f(pre)`) ---------------------------

def resnext50(pre):
    """fast.ai's converted ResNeXt-50 (32x4d), a flat Sequential."""
    from .models.resnext_50_32x4d import resnext_50_32x4d
    m = resnext_50_32x4d()
    return load_package_weights(m, "resnext_50_32x4d") if pre else m


def resnext101(pre):
    """fast.ai's converted ResNeXt-101 (32x4d)."""
    from .models.resnext_101_32x4d import resnext_101_32x4d
    m = resnext_101_32x4d()
    return load_package_weights(m, "resnext_101_32x4d") if pre else m


def resnext101_64(pre):
    """fast.ai's converted ResNeXt-101 (64x4d)."""
    from .models.resnext_101_64x4d import resnext_101_64x4d
    m = resnext_101_64x4d()
    return load_package_weights(m, "resnext_101_64x4d") if pre else m


def wrn(pre):
    """fast.ai's converted Wide-ResNet-50-2."""
    from .models.wrn_50_2f import wrn_50_2f
    m = wrn_50_2f()
    return load_package_weights(m, "wrn_50_2f") if pre else m


def inception_4(pre):
    """The `features` Sequential of Inception-v4 (ending with its average pool)."""
    from .models.inceptionv4 import inceptionv4
    return _children(inceptionv4(pretrained=pre))[0]


def inceptionresnet_2(pre):
    """fast.ai's Inception-ResNet-v2 module (1001 classes; `model_meta` cuts pool and linear)."""
    from .models.inceptionresnetv2 import InceptionResnetV2
    m = InceptionResnetV2()
    return load_package_weights(m, "inceptionresnetv2-d579a627") if pre else m


def dn121(pre):
    """The `features` of torchvision's DenseNet-121 (ends with norm5, no final ReLU)."""
    return _children(_torchvision_model("densenet121", pre))[0]


def dn161(pre):
    return _children(_torchvision_model("densenet161", pre))[0]


def dn169(pre):
    return _children(_torchvision_model("densenet169", pre))[0]


def dn201(pre):
    return _children(_torchvision_model("densenet201", pre))[0]


def vgg16(pre):
    """The `features` of torchvision's VGG-16 with batch norm (44 layers)."""
    return _children(_torchvision_model("vgg16_bn", pre))[0]


def vgg19(pre):
    """The `features` of torchvision's VGG-19 with batch norm (53 layers)."""
    return _children(_torchvision_model("vgg19_bn", pre))[0]


for _f in (dn161, dn169, dn201):
    _f.__doc__ = f"The `features` of torchvision's DenseNet-{_f.__name__[2:]}."
del _f


# --- model_meta / model_features --------------------------------------------------------------

class ArchDict(dict):
    """A dict keyed by architecture functions (fastai 0.7's `model_meta`, `model_features`),
    which also answers for torchvision's own constructors: `model_meta[torchvision.models.resnet34]`
    finds the entry of the architecture named `resnet34`. An entry stored under the constructor
    itself wins. torchvision is never imported for this."""

    def _same_name(self, key):
        module = getattr(key, "__module__", None) or ""
        name = getattr(key, "__name__", None)
        if not (module == "torchvision" or module.startswith("torchvision.")) or not name:
            return None
        for k in dict.keys(self):
            if k is not key and getattr(k, "__name__", None) == name:
                return k
        return None

    def __missing__(self, key):
        alias = self._same_name(key)
        if alias is None:
            raise KeyError(key)
        return dict.__getitem__(self, alias)

    def get(self, key, default=None):
        if dict.__contains__(self, key):
            return dict.__getitem__(self, key)
        alias = self._same_name(key)
        return default if alias is None else dict.__getitem__(self, alias)

    def __contains__(self, key):
        return dict.__contains__(self, key) or self._same_name(key) is not None


def zoo_meta(base=()):
    """`model_meta` ({architecture: [cut, lr_cut]}): `base` (the Rust core's architectures)
    plus the zoo's entries, as a fresh `ArchDict`."""
    meta = ArchDict(base)
    meta.update({resnext50: [8, 6], resnext101: [8, 6], resnext101_64: [8, 6], wrn: [8, 6],
                 inceptionresnet_2: [-2, 9], inception_4: [-1, 9],
                 dn121: [0, 7], dn161: [0, 7], dn169: [0, 7], dn201: [0, 7],
                 vgg16: [0, 22], vgg19: [0, 22]})
    return meta


def zoo_features():
    """`model_features` ({architecture: feature width after concat pooling}), 0.7's initial
    entries: the widths `2 * num_features` would get wrong or could not find."""
    return ArchDict({inception_4: 3072, dn121: 2048, dn161: 4416})


# The one `model_features` (`fastai.conv_learner` exports it; users add their own entries).
model_features = zoo_features()


# --- helpers ----------------------------------------------------------------------------------

def cut_model(m, cut):
    """The first `cut` children of `m` (a negative `cut` drops the last `-cut`); `[m]` itself
    when `cut` is 0."""
    return list(m.children())[:cut] if cut else [m]


def num_features(m):
    """`num_features` of the last sub-module that has one (searched from the last child back,
    each child before its own children): the last BatchNorm's width in practice; None if none."""
    kids = m if isinstance(m, (list, tuple)) else list(m.children())
    for child in reversed(kids):
        if hasattr(child, "num_features"):
            return child.num_features
        found = num_features(child)
        if found is not None:
            return found
    return None


def nasnetalarge(num_classes=1000, pretrained="imagenet"):
    """Cadene's NASNet-A-Large as fastai 0.7 shipped it: the module's forward returns the
    features (ReLU of the last cell, 4032 channels; 11 x 11 at the 331-pixel input it was
    trained at, with mean/std 0.5). `pretrained='imagenet'` reads Cadene's 1001-class file
    through the torch hub cache (downloaded there when absent) and drops its background row;
    `'imagenet+background'` keeps all 1001 rows; `None` builds with random weights."""
    from .models.nasnet import (INPUT_SETTINGS, PRETRAINED_SETTINGS, WEIGHTS_FILE, WEIGHTS_URL,
                                NASNetALarge)
    if not pretrained:
        return NASNetALarge(num_classes=num_classes)
    if pretrained not in PRETRAINED_SETTINGS:
        raise ValueError(f"nasnetalarge: unknown pretrained={pretrained!r} (choose "
                         f"{', '.join(map(repr, PRETRAINED_SETTINGS))} or None)")
    expected = PRETRAINED_SETTINGS[pretrained]["num_classes"]
    if num_classes != expected:
        raise ValueError(f"nasnetalarge: pretrained={pretrained!r} has {expected} classes, not "
                         f"{num_classes}; pass pretrained=None to build {num_classes} classes")
    path = _weights.hub_file(WEIGHTS_FILE, WEIGHTS_URL)
    model = NASNetALarge(num_classes=1001)
    try:
        model.load_state_dict(_weights.read_state_dict(path))
    except RuntimeError as e:  # torch's missing / unexpected / mis-shaped keys
        raise WeightsError(f"{path}: does not fit NASNet-A-Large: {e}") from e
    if num_classes == 1000:
        # row 0 of Cadene's classifier is the "background" class TensorFlow's model was trained
        # with; without it row i is ImageNet class i
        old = model.last_linear
        model.last_linear = nn.Linear(old.in_features, 1000)
        with torch.no_grad():
            model.last_linear.weight.copy_(old.weight[1:])
            model.last_linear.bias.copy_(old.bias[1:])
        model.num_classes = 1000
    for k, v in INPUT_SETTINGS.items():
        setattr(model, k, v)
    return model


ZOO = ["resnext50", "resnext101", "resnext101_64", "wrn", "inception_4", "inceptionresnet_2",
       "dn121", "dn161", "dn169", "dn201", "vgg16", "vgg19", "nasnetalarge"]

__all__ = [*ZOO, "model_features", "cut_model", "num_features", "zoo_meta",
           "zoo_features", "ArchDict", "load_package_weights", "load_hub_weights"]
