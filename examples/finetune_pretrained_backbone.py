"""Fine-tune an ssl_emp backbone pretrained on digits, in plain PyTorch.

python examples/finetune_pretrained_backbone.py RUN [--epochs 20]   # a run dir, checkpoint or exported .pt
"""

import argparse

import torch
import torch.nn.functional as F
from torch import nn

import ssl_emp
from ssl_emp.data import load_bank

parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
parser.add_argument("checkpoint", help="a run directory, a checkpoint or an exported backbone (.pt)")
parser.add_argument("--epochs", type=int, default=20)
args = parser.parse_args()

backbone = ssl_emp.load_backbone(args.checkpoint)  # a torchvision ResNet (fc removed) or the small CNN, eval mode
train, test = load_bank("digits", None, "train"), load_bank("digits", None, "test")
mean, std = (torch.tensor(v).view(1, -1, 1, 1) for v in train.channel_stats())
with torch.no_grad():
    feature_dim = backbone(torch.zeros(2, train.channels, train.image_size, train.image_size)).shape[1]
model = nn.Sequential(backbone, nn.Linear(feature_dim, train.num_classes)).train()

optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
torch.manual_seed(0)
for _ in range(args.epochs):
    for idx in torch.randperm(len(train)).split(128):
        loss = F.cross_entropy(model((train.batch(idx) - mean) / std), train.labels[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

model.eval()
with torch.no_grad():
    predictions = model((test.batch(torch.arange(len(test))) - mean) / std).argmax(dim=1)
print(f"fine-tuned top-1 on digits: {(predictions == test.labels).float().mean():.4f}")
