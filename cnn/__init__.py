"""The model layer: VGG, ResNet (ResNeXt, Wide, SE) and MobileNet v1/v2/v3 on our kernels.

Builders have torchvision's names, arguments and ``state_dict`` keys; ``cnn.Conv2d`` is an
``nn.Conv2d`` computed by ``kernels.conv2d``; ``cnn.convert`` puts any model on our kernels.
"""
from .conv import Conv1d, Conv2d, ConvTranspose1d, ConvTranspose2d, convert, count_converted
from .fuse import FusedConv2dBN, fuse
from .layers import ConvNormActivation, SqueezeExcitation, make_divisible
from .profile import LayerProfile, Profile, profile
from .mobilenet_v1 import MobileNetV1, mobilenet_v1
from .mobilenet_v2 import MobileNetV2, mobilenet_v2
from .mobilenet_v3 import MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from .resnet import (
    ResNet, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d,
    resnext101_64x4d, se_resnet50, se_resnext50_32x4d, wide_resnet50_2, wide_resnet101_2,
)
from .transfer import find_head, freeze, replace_head, trainable_parameters, unfreeze
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn

# Builders with torchvision's names (the models torchvision also has), then the ones it lacks.
TORCHVISION_MODELS = (
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
)
EXTRA_MODELS = ("mobilenet_v1", "se_resnet50", "se_resnext50_32x4d")
MODELS = TORCHVISION_MODELS + EXTRA_MODELS
