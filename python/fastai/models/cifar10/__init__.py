"""CIFAR-10 networks of fastai 0.7 (`fastai.models.cifar10.*`): 32-pixel inputs, 10 classes."""
