"""fastai 0.7's `fastai.models` package: network definitions imported by module path
(`from fastai.models.cifar10.wideresnet import wrn_22`, `fastai.models.resnet.vgg_resnet50`,
`fastai.models.darknet`, `fastai.models.unet`, the converted `resnext_50_32x4d`, ...). They are
plain PyTorch modules; the architecture functions built from them (`resnext50`, `wrn`, ...) are in
`fastai.torch_imports`."""
