"""A compact bank of images without a given target, for calibrating adapted concepts.

``clipsam adapt`` needs images on which a new concept should answer "not found". A model
folder carries ``negatives.safetensors``: for a few training images of every set, the patch
vectors of the image summarised by k-means into ``clusters`` unit centroids (seeded by
farthest-point sampling, so a small distinctive region gets a centroid of its own) and the
number of cells each stands for, with the mean unit encoder feature of those cells (what an
adapted concept's feature probe reads; linear, so exact on the mean). A concept's presence
score on a bank image is then approximated on the centroids instead of every cell: the same
top-k rule, each centroid counted as many cells as it stands for (a centroid's cosine is a
smoothed cell cosine, so scores are slightly low: the bank is a sample of negatives, not a
replacement for the user's own).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from clipsam.io.atomic import write_atomic
from clipsam.models.grounding.grid import valid_mask
from clipsam.models.grounding.model import GroundingModel, unit_features
from clipsam.train.region_data import RegionData

BANK_FILE = "negatives.safetensors"


@dataclass(frozen=True)
class NegativeBank:
    """(M, K, D) unit centroids of M images, the (M,) set name of each image, the (M, K)
    number of cells each centroid stands for and the (M, K, C) mean unit encoder feature of
    those cells (None in banks made before feature probes)."""

    centroids: np.ndarray
    set_names: tuple[str, ...]
    sizes: np.ndarray
    features: np.ndarray | None = None

    def cell_logits(self, model: GroundingModel, vector: torch.Tensor,
                    probe: torch.Tensor | None = None) -> torch.Tensor:
        """(M, K) logit of every centroid for a (D,) unit concept ``vector`` and its (C + 1,)
        feature ``probe`` (differentiable in both, so adaptation can train against them)."""
        if probe is not None and self.features is None:
            raise ValueError("this negative bank has no encoder features: it cannot score a "
                             "concept with a feature probe")
        heads = model.heads
        cos = torch.from_numpy(np.asarray(self.centroids, np.float32)) @ vector
        logits = heads.log_scale.detach().exp() * cos + heads.bias.detach()
        if probe is not None:
            logits = logits + torch.from_numpy(np.asarray(self.features, np.float32)) \
                @ probe[:-1] + probe[-1]
        return logits

    def presence_scores(self, model: GroundingModel, vector: np.ndarray,
                        probe: np.ndarray | None = None) -> np.ndarray:
        """(M,) approximate presence score of ``vector`` (and its feature ``probe``) on every
        bank image."""
        with torch.inference_mode():
            logits = self.cell_logits(model, torch.from_numpy(np.asarray(vector, np.float32)),
                                      None if probe is None else
                                      torch.from_numpy(np.asarray(probe, np.float32)))
            sizes = torch.from_numpy(np.asarray(self.sizes, np.float32))
            # the top-k cells: centroids by decreasing logit, each counted as its cells
            order = logits.argsort(dim=1, descending=True)
            ranked, counts = logits.gather(1, order), sizes.gather(1, order)
            k = torch.minimum(torch.tensor(float(model.presence.top_k)), counts.sum(dim=1))
            before = counts.cumsum(dim=1) - counts
            taken = torch.minimum(counts, (k[:, None] - before).clamp_min(0))
            return torch.sigmoid((ranked * taken).sum(dim=1) / k).numpy()

    def halves(self) -> tuple[NegativeBank, NegativeBank]:
        """Two disjoint banks: each set's 1st, 3rd, ... images and its 2nd, 4th, ... ones."""
        seen: dict[str, int] = {}
        parity = []
        for name in self.set_names:
            parity.append(seen.get(name, 0) % 2)
            seen[name] = seen.get(name, 0) + 1
        parity = np.asarray(parity)

        def take(rows: np.ndarray) -> NegativeBank:
            return NegativeBank(self.centroids[rows], tuple(self.set_names[i] for i in rows),
                                self.sizes[rows],
                                None if self.features is None else self.features[rows])
        return take(np.flatnonzero(parity == 0)), take(np.flatnonzero(parity == 1))

    def save(self, path: Path) -> None:
        tensors = {"centroids": torch.from_numpy(self.centroids.astype(np.float16)),
                   "sizes": torch.from_numpy(np.asarray(self.sizes, np.int32))}
        if self.features is not None:
            tensors["features"] = torch.from_numpy(self.features.astype(np.float16))
        meta = {"set_names": json.dumps(list(self.set_names))}
        write_atomic(Path(path), lambda p: save_file(tensors, str(p), metadata=meta))
        Path(path).chmod(0o644)


def load_bank(path: Path) -> NegativeBank:
    """The bank saved at ``path``, its float16 arrays widened to float32 once (adaptation
    scores them at every optimiser step)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        names = tuple(json.loads(handle.metadata()["set_names"]))
    tensors = load_file(str(path))
    features = tensors["features"].float().numpy() if "features" in tensors else None
    return NegativeBank(tensors["centroids"].float().numpy(), names, tensors["sizes"].numpy(),
                        features)


def _kmeans(vectors: torch.Tensor, clusters: int, iterations: int,
            generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """(clusters, D) unit centroids of (N, D) unit vectors (spherical k-means, seeded by
    farthest-point sampling) and the (N,) centroid each vector belongs to."""
    chosen = [int(torch.randint(len(vectors), (1,), generator=generator))]
    nearest = vectors @ vectors[chosen[0]]
    for _ in range(clusters - 1):
        chosen.append(int(nearest.argmin()))
        nearest = torch.maximum(nearest, vectors @ vectors[chosen[-1]])
    centroids = vectors[chosen].clone()
    for _ in range(iterations):
        assign = (vectors @ centroids.T).argmax(dim=1)
        summed = torch.zeros_like(centroids).index_add_(0, assign, vectors)
        empty = summed.norm(dim=1) < 1e-8
        summed[empty] = centroids[empty]
        centroids = F.normalize(summed, dim=1)
    return centroids, (vectors @ centroids.T).argmax(dim=1)


def build_bank(model: GroundingModel, data: RegionData, per_set: int = 10, clusters: int = 32,
               iterations: int = 10, seed: int = 0) -> NegativeBank:
    """The bank of the first ``per_set`` images of every set of ``data`` (in data order)."""
    generator = torch.Generator().manual_seed(seed)
    taken: dict[str, int] = {}
    centroids, sizes, features, names = [], [], [], []
    for i, sample in enumerate(data.samples):
        if taken.get(sample.set_name, 0) >= per_set:
            continue
        taken[sample.set_name] = taken.get(sample.set_name, 0) + 1
        embedding = data.embedding(i)
        patches = torch.from_numpy(model.patch_embeddings(embedding))
        valid = torch.from_numpy(valid_mask(embedding.geometry, patches.shape[-1]))
        vectors = patches[:, valid].T.contiguous()
        means, assign = _kmeans(vectors, min(clusters, len(vectors)), iterations, generator)
        counts = torch.bincount(assign, minlength=len(means))
        cells = torch.from_numpy(unit_features(embedding.features[0])[:, valid.numpy()].T)
        summed = torch.zeros(len(means), cells.shape[1]).index_add_(0, assign, cells)
        centroids.append(means.numpy())
        sizes.append(counts.numpy())
        features.append((summed / counts.clamp_min(1)[:, None]).numpy())
        names.append(sample.set_name)
    if not centroids:
        raise ValueError("no image to build a negative bank from")
    size = min(len(c) for c in centroids)
    return NegativeBank(np.stack([c[:size] for c in centroids]), tuple(names),
                        np.stack([s[:size] for s in sizes]),
                        np.stack([f[:size] for f in features]))
