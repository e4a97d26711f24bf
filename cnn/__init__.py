"""The model layer: the classic CNNs, LeNet-5 to EfficientNet and ConvNeXt, and the video ResNets, on our kernels.

Builders have torchvision's names, arguments and ``state_dict`` keys; ``cnn.Conv2d`` is an
``nn.Conv2d`` computed by ``kernels.conv2d`` (``cnn.Conv3d``: ``kernels.conv3d``); ``cnn.convert``
puts any model on our kernels.
"""
from .conv import Conv1d, Conv2d, Conv3d, ConvTranspose1d, ConvTranspose2d, ConvTranspose3d, convert, count_converted
from .fuse import FusedConv2dBN, FusedConv3dBN, fuse
from .layers import BasicConv2d, ConvNormActivation, SqueezeExcitation, StochasticDepth, make_divisible
from .profile import LayerProfile, Profile, profile
from .quantize import QuantizedConv2dBN, quantize
from .alexnet import AlexNet, alexnet
from .convnext import ConvNeXt, convnext_base, convnext_large, convnext_small, convnext_tiny
from .densenet import DenseNet, densenet121, densenet161, densenet169, densenet201
from .efficientnet import (
    EfficientNet, efficientnet_b0, efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4,
    efficientnet_b5, efficientnet_b6, efficientnet_b7,
)
from .googlenet import GoogLeNet, GoogLeNetOutputs, googlenet
from .inception import Inception3, InceptionOutputs, inception_v3
from .lenet import LeNet5, lenet5
from .mnasnet import MNASNet, mnasnet0_5, mnasnet0_75, mnasnet1_0, mnasnet1_3
from .mobilenet_v1 import MobileNetV1, mobilenet_v1
from .mobilenet_v2 import MobileNetV2, mobilenet_v2
from .mobilenet_v3 import MobileNetV3, mobilenet_v3_large, mobilenet_v3_small
from .resnet import (
    ResNet, resnet18, resnet34, resnet50, resnet101, resnet152, resnext50_32x4d, resnext101_32x8d,
    resnext101_64x4d, se_resnet50, se_resnext50_32x4d, wide_resnet50_2, wide_resnet101_2,
)
from .shufflenet_v2 import (
    ShuffleNetV2, shufflenet_v2_x0_5, shufflenet_v2_x1_0, shufflenet_v2_x1_5, shufflenet_v2_x2_0,
)
from .squeezenet import SqueezeNet, squeezenet1_0, squeezenet1_1
from .transfer import find_head, freeze, replace_head, trainable_parameters, unfreeze
from .vgg import VGG, vgg11, vgg11_bn, vgg13, vgg13_bn, vgg16, vgg16_bn, vgg19, vgg19_bn
from .video_resnet import VideoResNet, mc3_18, r2plus1d_18, r3d_18

# Builders with torchvision's names (the models torchvision also has), then the ones it lacks.
TORCHVISION_MODELS = (
    "vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
    "resnet18", "resnet34", "resnet50", "resnet101", "resnet152",
    "resnext50_32x4d", "resnext101_32x8d", "resnext101_64x4d", "wide_resnet50_2", "wide_resnet101_2",
    "mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small",
    "alexnet", "googlenet", "inception_v3", "densenet121", "densenet161", "densenet169", "densenet201",
    "squeezenet1_0", "squeezenet1_1",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3",
    "efficientnet_b4", "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "shufflenet_v2_x0_5", "shufflenet_v2_x1_0", "shufflenet_v2_x1_5", "shufflenet_v2_x2_0",
    "mnasnet0_5", "mnasnet0_75", "mnasnet1_0", "mnasnet1_3",
    "convnext_tiny", "convnext_small", "convnext_base", "convnext_large",
)
EXTRA_MODELS = ("mobilenet_v1", "se_resnet50", "se_resnext50_32x4d", "lenet5")
MODELS = TORCHVISION_MODELS + EXTRA_MODELS  # image classifiers: (N, 3, H, W) in
# Video classifiers with torchvision's names (``torchvision.models.video``): (N, 3, T, H, W) clips in.
VIDEO_MODELS = ("r3d_18", "mc3_18", "r2plus1d_18")

# The smallest square input each model runs on (torchvision's ``min_size``; 32 for LeNet-5, which
# needs exactly 32x32 for its C5 layer); the others run on 1x1 and up.
MIN_INPUT_SIZE = {
    "alexnet": 63, "googlenet": 15, "inception_v3": 75, "squeezenet1_0": 21, "squeezenet1_1": 17,
    "densenet121": 29, "densenet161": 29, "densenet169": 29, "densenet201": 29,
    "vgg11": 32, "vgg11_bn": 32, "vgg13": 32, "vgg13_bn": 32, "vgg16": 32, "vgg16_bn": 32, "vgg19": 32,
    "vgg19_bn": 32, "lenet5": 32,
    "convnext_tiny": 32, "convnext_small": 32, "convnext_base": 32, "convnext_large": 32,
}
