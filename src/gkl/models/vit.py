"""Vision Transformers at CIFAR resolution, as used by USB's semi-supervised benchmark.

``vit_small_patch2_32`` is USB's ViT-S/2 for 32×32 inputs (patch 2, width 384, depth 12,
6 heads, MLP ratio 4, drop-path 0.2 in training, class token, learned position embedding,
pre-norm blocks). Parameter names follow timm's ``VisionTransformer`` (``patch_embed.proj``,
``cls_token``, ``pos_embed``, ``blocks.<i>.{norm1,attn.qkv,attn.proj,norm2,mlp.fc1,mlp.fc2}``,
``norm``, ``head``), the layout of USB's ImageNet-pretrained checkpoints, and what
layer-wise LR decay keys on (``blocks.<i>``). Pretrained weights are a file the user
supplies (``model.checkpoint`` in a config; read with ``weights_only``).
"""

from __future__ import annotations

import torch
from torch import nn

from gkl.models.registry import register_model


class DropPath(nn.Module):
    """Stochastic depth per example (Huang et al. 2016); identity in eval mode."""

    def __init__(self, p: float) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        keep = torch.rand((x.shape[0],) + (1,) * (x.dim() - 1), device=x.device, dtype=x.dtype) >= self.p
        return x * keep / (1.0 - self.p)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, img_size: int, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        if img_size % patch:
            raise ValueError(f"patch: {patch} does not divide img_size {img_size}")
        self.num_patches = (img_size // patch) ** 2
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """Class-token ViT; ``forward(x)`` gives logits, ``features(x)`` the normed class token."""

    def __init__(
        self,
        num_classes: int,
        *,
        img_size: int = 32,
        patch_size: int = 2,
        in_chans: int = 3,
        embed_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, self.patch_embed.num_patches + 1, embed_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.Sequential(*(Block(embed_dim, num_heads, mlp_ratio, r) for r in rates))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.head = nn.Linear(embed_dim, num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1) + self.pos_embed
        return self.norm(self.blocks(tokens))[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


@register_model("vit_small_patch2_32", input_kind="cifar")
def vit_small_patch2_32(num_classes: int, *, drop_path_rate: float = 0.2) -> VisionTransformer:
    """USB's ViT-S/2 at 32 px (width 384, depth 12, 6 heads, drop-path 0.2)."""
    return VisionTransformer(num_classes, embed_dim=384, depth=12, num_heads=6, drop_path_rate=drop_path_rate)


@register_model("vit_tiny_patch2_32", input_kind="cifar")
def vit_tiny_patch2_32(num_classes: int, *, drop_path_rate: float = 0.1) -> VisionTransformer:
    """ViT-Ti/2 at 32 px (width 192, depth 12, 3 heads)."""
    return VisionTransformer(num_classes, embed_dim=192, depth=12, num_heads=3, drop_path_rate=drop_path_rate)


@register_model("vit_digits", input_kind="digits")
def vit_digits(num_classes: int, *, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A 2-block ViT for the bundled 8×8 digits (patch 2, width 32, 2 heads): tests and demos."""
    return VisionTransformer(
        num_classes,
        img_size=8,
        patch_size=2,
        in_chans=1,
        embed_dim=32,
        depth=2,
        num_heads=2,
        drop_path_rate=drop_path_rate,
    )
