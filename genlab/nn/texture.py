"""A fixed feature network for texture synthesis: random filters or filters from a user's file.

No pretrained VGG can be downloaded here. Ustyuzhaninov et al. ("Texture synthesis using shallow
convolutional networks with random filters", arXiv:1606.00021) show that Gram matrices of
random-filter ReLU features already synthesise textures well, the scales of the features
mattering more than trained filters. This network is a stack of stages, each a convolution
(odd kernel, "same" padding) and a ReLU, then 2x2 average pooling before the next stage (average
pooling, as Gatys et al. arXiv:1505.07376 found better than max pooling for synthesis); the
features of every stage are returned, so a 3-stage net describes the texture at the image's
scale, at half and at a quarter (receptive fields k, 3k - 1, 7k - 5... pixels).

The filters are buffers (never parameters, so no optimiser sees them and checkpoints hold them):
drawn from N(0, 2 / fan_in) (He et al. arXiv:1502.01852, so the ReLU features keep their scale
through the stages) with zero biases, by a generator with a fixed seed, or read from a
safetensors file with exactly the keys and shapes of `file_state()`: `stage{i}.weight`
(C_i, C_{i-1}, k, k) and `stage{i}.bias` (C_i,) for i = 0..S-1 (`save_file` writes one).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import GenlabError, first_line
from genlab.nn.weights import check_state_dict


class TextureFeatures(nn.Module):
    """Fixed conv + ReLU (+ 2x2 average pool) stages; forward returns each stage's features."""

    def __init__(
        self,
        in_channels: int,
        channels: Sequence[int],
        kernel: int = 3,
        seed: int = 0,
        weights: str | Path = "",
    ) -> None:
        super().__init__()
        if not channels or min(channels) < 1:
            raise GenlabError(f"model.channels must be positive widths; got {tuple(channels)}")
        if kernel < 1 or kernel % 2 == 0:
            raise GenlabError(f"model.kernel must be an odd size >= 1; got {kernel}")
        self.num_stages = len(channels)
        self.kernel = kernel
        g = torch.Generator().manual_seed(seed)  # the filters never touch the global RNG
        widths = [in_channels, *channels]
        for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
            std = (2.0 / (c_in * kernel * kernel)) ** 0.5
            w = torch.randn(c_out, c_in, kernel, kernel, generator=g) * std
            self.register_buffer(f"stage{i}_weight", w)
            self.register_buffer(f"stage{i}_bias", torch.zeros(c_out))
        if weights:
            self.load_file(Path(weights))

    def filters(self, i: int) -> tuple[Tensor, Tensor]:
        return getattr(self, f"stage{i}_weight"), getattr(self, f"stage{i}_bias")

    def file_state(self) -> dict[str, Tensor]:
        """The filters under the file's key names (`stage{i}.weight`, `stage{i}.bias`)."""
        out = {}
        for i in range(self.num_stages):
            w, b = self.filters(i)
            out[f"stage{i}.weight"], out[f"stage{i}.bias"] = w, b
        return out

    def save_file(self, path: str | Path) -> None:
        """Write the filters as a safetensors file that `weights=` reads back."""
        from safetensors.torch import save_file

        save_file({k: v.detach().cpu().contiguous() for k, v in self.file_state().items()}, path)

    def load_file(self, path: Path) -> None:
        """Replace the filters by those of a safetensors file (never a pickle), checked first."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        if not path.is_file():
            raise GenlabError(f"texture feature weights file not found: {path}")
        try:
            found = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as e:
            first = first_line(e, 200)
            raise GenlabError(f"cannot read texture feature weights {path}: {first}") from None
        check_state_dict(
            self.file_state(),
            found,
            f"texture feature weights {path}",
            "the feature net",
            hint="model.channels, model.kernel and the image channels fix the shapes",
        )
        with torch.no_grad():
            for i in range(self.num_stages):
                w, b = self.filters(i)
                w.copy_(found[f"stage{i}.weight"])
                b.copy_(found[f"stage{i}.bias"])

    def forward(self, x: Tensor) -> list[Tensor]:
        """x (B, C, H, W), centred data ([-1, 1]) -> features of every stage, (B, C_i, H_i, W_i)."""
        features = []
        h = x
        for i in range(self.num_stages):
            if i > 0:
                h = F.avg_pool2d(h, 2)
            w, b = self.filters(i)
            h = F.relu(F.conv2d(h, w, b, padding=self.kernel // 2))
            features.append(h)
        return features
