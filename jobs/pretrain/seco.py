"""Seasonal Contrast (Mañas et al., ICCV 2021, section 3.2), after the reference moco2_module.py.

A query encoder and a momentum key encoder share one backbone architecture; each embedding
sub-space has its own projection head pair and its own queue of negatives. With keys
k0 = aug(t1), k1 = t2, k2 = aug(t0) for a query t0:

  sub-space 0: positive k0                         -> invariant to season and augmentation
  sub-space 1: positive k1, negatives k0 and k2    -> invariant to season only
  sub-space 2: positive k2, negatives k0 and k1    -> invariant to augmentation only

Every sub-space also contrasts with its queue of earlier positive keys.

Besides the loss, each step returns the figures that show a collapse the loss can hide (every
query embedding the same: its std across the batch near 0, where spread ones sit near 1/sqrt(dim)).

With one sub-space and one key this is MoCo-v2 (`method: moco`, `moco-tp`).
"""

from __future__ import annotations

import copy

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from jobs.common.backbone import resnet as torchvision_resnet
from secoctl.model_card import FEATURES as FEATURE_DIMS


def backbone(name: str, in_chans: int = 3) -> nn.Sequential:
    """torchvision ResNet without fc over `in_chans` bands, laid out as the reference's encoder_q (index 0 = conv1)."""
    resnet = torchvision_resnet(name, in_chans)
    return nn.Sequential(
        resnet.conv1,
        resnet.bn1,
        resnet.relu,
        resnet.maxpool,
        resnet.layer1,
        resnet.layer2,
        resnet.layer3,
        resnet.layer4,
        resnet.avgpool,
        nn.Flatten(1),
    )


def projection_head(feature_dim: int, embedding_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(feature_dim, feature_dim), nn.ReLU(inplace=True), nn.Linear(feature_dim, embedding_dim)
    )


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


@torch.no_grad()
def gather(tensor: torch.Tensor) -> torch.Tensor:
    """Concatenate a tensor from every rank (no gradient: keys only)."""
    if not _distributed():
        return tensor
    parts = [torch.empty_like(tensor) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, tensor.contiguous())
    return torch.cat(parts)


class SeCo(nn.Module):
    def __init__(
        self,
        backbone_name: str = "resnet50",
        subspaces: int = 3,
        embedding_dim: int = 128,
        queue_size: int = 16_384,
        momentum: float = 0.999,
        temperature: float = 0.07,
        in_chans: int = 3,
    ):
        super().__init__()
        feature_dim = FEATURE_DIMS[backbone_name]
        self.subspaces, self.queue_size = subspaces, queue_size
        self.momentum, self.temperature = momentum, temperature
        self.encoder_q = backbone(backbone_name, in_chans)
        self.heads_q = nn.ModuleList(projection_head(feature_dim, embedding_dim) for _ in range(subspaces))
        self.encoder_k = copy.deepcopy(self.encoder_q)
        self.heads_k = copy.deepcopy(self.heads_q)
        for parameter in [*self.encoder_k.parameters(), *self.heads_k.parameters()]:
            parameter.requires_grad = False
        self.register_buffer("queue", F.normalize(torch.randn(subspaces, embedding_dim, queue_size), dim=1))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def _momentum_update(self) -> None:
        query = [*self.encoder_q.parameters(), *self.heads_q.parameters()]
        key = [*self.encoder_k.parameters(), *self.heads_k.parameters()]
        torch._foreach_mul_(key, self.momentum)
        torch._foreach_add_(key, query, alpha=1 - self.momentum)

    @torch.no_grad()
    def _key_features(self, images: torch.Tensor) -> torch.Tensor:
        """Key-encoder features with the batch shuffled across ranks, so BN cannot cheat (shuffle-BN)."""
        if not _distributed():
            return self.encoder_k(images)
        gathered = gather(images)
        permutation = torch.randperm(gathered.shape[0], device=images.device)
        dist.broadcast(permutation, src=0)
        rank = dist.get_rank()
        mine = permutation.view(dist.get_world_size(), -1)[rank]
        features = gather(self.encoder_k(gathered[mine]))
        restore = torch.argsort(permutation).view(dist.get_world_size(), -1)[rank]
        return features[restore]

    def query_embedding(self, query_features: torch.Tensor, subspace: int) -> torch.Tensor:
        return F.normalize(self.heads_q[subspace](query_features), dim=1)

    def logits(self, q: torch.Tensor, key_embeddings: list[torch.Tensor], subspace: int) -> torch.Tensor:
        """Column 0 is the positive, then the sub-space's queue; in sub-spaces > 0 the other views'
        keys of the whole batch follow as negatives (as the reference code does, where the paper's
        text reads as if only the same sample's other keys were meant)."""
        negatives = [self.queue[subspace].clone().detach()]
        if subspace > 0:
            negatives += [k.T for j, k in enumerate(key_embeddings) if j != subspace]
        positive = (q * key_embeddings[subspace]).sum(1, keepdim=True)
        return torch.cat([positive, q @ torch.cat(negatives, dim=1)], dim=1) / self.temperature

    def forward(
        self, query: torch.Tensor, keys: list[torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
        """The summed loss, the per-sub-space losses and their `health` (see `health`), all left on the device."""
        if len(keys) != self.subspaces:
            raise ValueError(f"expected {self.subspaces} key views, got {len(keys)}")
        query_features = self.encoder_q(query)
        with torch.no_grad():
            self._momentum_update()
            key_features = [self._key_features(k) for k in keys]
        losses, positives, health = [], [], []
        for subspace in range(self.subspaces):
            with torch.no_grad():
                key_embeddings = [F.normalize(self.heads_k[subspace](f), dim=1) for f in key_features]
            q = self.query_embedding(query_features, subspace)
            logits = self.logits(q, key_embeddings, subspace)
            targets = torch.zeros(logits.shape[0], dtype=torch.long, device=logits.device)
            losses.append(F.cross_entropy(logits.float(), targets))
            positives.append(key_embeddings[subspace])
            health.append(self.health(q, logits))
        self._enqueue(positives)
        return torch.stack(losses).sum(), losses, torch.stack(health)

    @torch.no_grad()
    def health(self, q: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """(embedding std, positive cosine, queue cosine) of one sub-space's step, on the device.

        The std is each dimension's across the batch, averaged over dimensions (SimSiam's measure);
        the cosines come back out of the logits, before the queue is updated: column 0 is the
        positive, the next `queue_size` the queue.
        """
        cosines = logits.detach().float() * self.temperature
        return torch.stack(
            [q.detach().float().std(dim=0).mean(), cosines[:, 0].mean(), cosines[:, 1 : 1 + self.queue_size].mean()]
        )

    @torch.no_grad()
    def _enqueue(self, positives: list[torch.Tensor]) -> None:
        """Each sub-space's queue takes its own positive keys, from every rank."""
        keys = torch.stack([gather(k.float()) for k in positives])  # (subspaces, batch, dim)
        batch = keys.shape[1]
        if self.queue_size % batch:
            raise ValueError(f"queue size {self.queue_size} is not a multiple of the global batch {batch}")
        # The pointer stays on the device: reading it back would stall the host every step.
        columns = (self.queue_ptr + torch.arange(batch, device=keys.device)) % self.queue_size
        self.queue.index_copy_(2, columns, keys.transpose(1, 2).to(self.queue.dtype))
        self.queue_ptr.copy_((self.queue_ptr + batch) % self.queue_size)


def subspaces_for(method: str) -> int:
    return 3 if method == "seco" else 1
