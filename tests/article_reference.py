"""The source article's ``SEBlock`` and ``VGG16_SE``, copied by hand as the conformance oracle.

This is the architecture spec (shared/seed/000_*.txt, sections 3 and 4.3): a hand-written
``nn.Sequential`` with PyTorch's default initialisation. Only the formatting differs from the article;
keep the code itself identical so the tests compare the library against what the article's readers have.
"""

import torch
import torch.nn as nn


class SEBlock(nn.Module):
    """Squeeze-and-Excitation Block"""

    def __init__(self, channel, reduction=16):
        super(SEBlock, self).__init__()  # noqa: UP008 - the article's spelling
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Sequential(
            nn.Linear(channel, channel // reduction, bias=False),
            nn.ReLU(inplace=True),
            nn.Linear(channel // reduction, channel, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        b, c, _, _ = x.size()
        y = self.avg_pool(x).view(b, c)
        y = self.fc(y).view(b, c, 1, 1)
        return x * y.expand_as(x)


class VGG16_SE(nn.Module):  # noqa: N801 - the article's class name
    def __init__(self, num_classes=1000, reduction=16):
        super(VGG16_SE, self).__init__()  # noqa: UP008 - the article's spelling
        self.features = nn.Sequential(
            # 第一层卷积块
            nn.Conv2d(3, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(64, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            SEBlock(64, reduction),  # 添加SE注意力
            nn.MaxPool2d(kernel_size=2, stride=2),
            # 第二层卷积块
            nn.Conv2d(64, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(128, 128, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            SEBlock(128, reduction),  # 添加SE注意力
            nn.MaxPool2d(kernel_size=2, stride=2),
            # 第三层卷积块
            nn.Conv2d(128, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(256, 256, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            SEBlock(256, reduction),  # 添加SE注意力
            nn.MaxPool2d(kernel_size=2, stride=2),
            # 第四层卷积块
            nn.Conv2d(256, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            SEBlock(512, reduction),  # 添加SE注意力
            nn.MaxPool2d(kernel_size=2, stride=2),
            # 第五层卷积块
            nn.Conv2d(512, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(512, 512, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            SEBlock(512, reduction),  # 添加SE注意力
            nn.MaxPool2d(kernel_size=2, stride=2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(512 * 7 * 7, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, 4096),
            nn.ReLU(inplace=True),
            nn.Dropout(),
            nn.Linear(4096, num_classes),
        )

    def forward(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = torch.flatten(x, 1)
        x = self.classifier(x)
        return x


# 创建模型实例
def vgg16_se(num_classes=1000, reduction=16):
    model = VGG16_SE(num_classes=num_classes, reduction=reduction)
    return model


# Section 5.2 of the article: parameters added per stage (2 * C^2 / r) and their total.
ARTICLE_SE_PARAMS = (512, 2_048, 8_192, 32_768, 32_768)
ARTICLE_SE_TOTAL = 76_288
ARTICLE_SE_INDICES = (4, 10, 18, 26, 34)
