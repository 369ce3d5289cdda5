"""VQ-VAE (genlab.models.vqvae): shapes, code statistics, dead-code restarts, the two training
stages, a short training run and sampling."""

from __future__ import annotations

import torch
from conftest import tiny_data

import genlab.models.vqvae  # noqa: F401  (registers the model)
from genlab.data.spec import Data, DataSpec
from genlab.models import build
from genlab.models.vqvae import VQVAE
from genlab.nn.quantize import VectorQuantizer

SMALL = dict(channels=(4, 8), latent_dim=3, num_codes=8, prior_width=8, prior_blocks=1)


def tiny_model(**cfg) -> tuple[VQVAE, dict]:
    data = tiny_data("image")
    torch.manual_seed(0)
    model = build("vqvae", data.spec, **{**SMALL, **cfg})
    return model, data.batch(torch.arange(16))


def test_shapes_and_code_statistics() -> None:
    model, batch = tiny_model()
    x = batch["x"]  # (16, 1, 8, 8): two halvings -> a 2 x 2 code grid
    z_e = model.encode(x)
    assert z_e.shape == (16, 3, 2, 2)
    codes = model.codes(x)
    assert codes.shape == (16, 2, 2) and codes.dtype == torch.long
    assert 0 <= codes.min() and codes.max() < 8
    assert model.reconstruct(x).shape == x.shape
    assert torch.equal(model.decode_codes(codes), model.decode(z_e))
    out = model(batch)
    # perplexity exp(H) of 64 assignments to 8 codes lies in [1, 8]
    assert 1 - 1e-6 <= float(out["perplexity"]) <= 8 + 1e-6
    used = int(torch.unique(codes).numel())
    assert float(out["usage"]) == used / 8


def test_dead_code_restart_revives_unused_codes() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(8, 2, restart_threshold=1.0)
    z = torch.randn(200, 2, generator=torch.Generator().manual_seed(1)).T[None]  # (1, 2, 200)
    with torch.no_grad():
        q.codebook[:4] = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
        q.codebook[4:] = 100.0  # far from every input: never chosen
        q.usage[:4] = 50.0  # the four live codes are well used
    before = q(z).codes
    assert set(before.unique().tolist()) <= {0, 1, 2, 3}
    q.update(z, before)
    rows = q.flatten(z)
    for k in range(4, 8):  # each dead code now sits on an encoder output...
        assert (rows - q.codebook[k]).abs().sum(1).min() == 0
    assert torch.all(q.usage[4:] == 1.0)
    after = q(z).codes  # ...so it wins at least that output (unless two drew the same one)
    revived = set(after.unique().tolist()) - {0, 1, 2, 3}
    distinct = len({tuple(q.codebook[k].tolist()) for k in range(4, 8)})
    assert len(revived) == distinct >= 1
    with torch.no_grad():  # threshold 0: no restarts
        off = VectorQuantizer(8, 2, restart_threshold=0.0)
        kept = off.codebook.clone()
        off.update(z, off(z).codes)
        assert torch.equal(off.codebook, kept)


def test_first_update_initialises_the_codebook_from_encoder_outputs() -> None:
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2)  # usage starts at 0: every code is dead
    z = torch.randn(1, 2, 30, generator=torch.Generator().manual_seed(2))
    q.update(z, q(z).codes)
    rows = q.flatten(z)
    for k in range(4):
        assert (rows - q.codebook[k].detach()).abs().sum(1).min() == 0


def test_stages_train_the_right_parameters() -> None:
    """Before prior_start the autoencoder phase trains encoder, codebook and decoder; from it on
    only the decoder (the codes are frozen). The prior phase always trains only the prior."""
    model, batch = tiny_model(prior_start=5)
    phases = {p.name: p for p in model.phases(1e-2)}
    groups = {
        "encoder": [*model.encoder.parameters(), *model.pre_quant.parameters()],
        "codebook": [model.quantizer.codebook],
        "decoder": list(model.decoder.parameters()),
        "prior": list(model.prior.parameters()),
    }

    def changed_groups(phase: str) -> set[str]:
        before = {name: [p.detach().clone() for p in ps] for name, ps in groups.items()}
        opt = phases[phase].optimizer(phases[phase].params)
        opt.zero_grad()
        model(batch, phase=phase)["loss"].backward()
        opt.step()
        return {
            name
            for name, ps in groups.items()
            if any(not torch.equal(p, b) for p, b in zip(ps, before[name]))
        }

    model.step = 0
    assert changed_groups("autoencoder") == {"encoder", "codebook", "decoder"}
    assert changed_groups("prior") == {"prior"}
    model.step = 5
    assert changed_groups("autoencoder") == {"decoder"}
    assert changed_groups("prior") == {"prior"}


def patterns(n: int = 64) -> tuple[Data, torch.Tensor]:
    """n images, each one of 4 random binary 8x8 patterns (returned too)."""
    g = torch.Generator().manual_seed(0)
    protos = torch.randint(0, 2, (4, 1, 8, 8), generator=g).float()
    x = protos[torch.arange(n) % 4]
    spec = DataSpec("patterns", (1, 8, 8), (0.0, 1.0), 0, 2)
    return Data(spec, x, None, x, None), protos


def test_short_training_lowers_reconstruction_error() -> None:
    """After 150 steps the codes tell the 4 equally frequent patterns apart.

    A reconstruction that gives patterns a and b the same output has squared error at least
    ||p_a - p_b||^2 / 4 on each, so >= min_{a<b} ||p_a - p_b||^2 / 8 on average: an error below
    that bound means x_hat separates all four patterns (2 bits through the codes).
    """
    data, protos = patterns()
    torch.manual_seed(0)
    cfg = {**SMALL, "channels": (8, 16), "recon": "mse", "prior_start": 10**6}
    model = build("vqvae", data.spec, **cfg)
    x = data.x_train
    merged = min(
        float(((protos[a] - protos[b]) ** 2).sum()) / 8 for a in range(4) for b in range(a + 1, 4)
    )
    (phase,) = [p for p in model.phases(1e-2) if p.name == "autoencoder"]
    opt = phase.optimizer(phase.params)

    def error() -> float:
        with torch.no_grad():
            return float(((model.reconstruct(x) - x) ** 2).flatten(1).sum(1).mean())

    start = error()
    assert start > merged  # untrained: the bound is not met by chance
    model.train()
    for step in range(150):
        model.step = step
        opt.zero_grad()
        model({"x": x}, phase="autoencoder")["loss"].backward()
        opt.step()
        model.after_step("autoencoder")
    assert error() < merged


def test_sampling_decodes_prior_codes_in_range() -> None:
    model, _ = tiny_model()
    model.eval()
    x = model.sample(6, generator=torch.Generator().manual_seed(3))
    assert x.shape == (6, 1, 8, 8)
    assert x.min() >= 0 and x.max() <= 1
    codes = model.prior.sample(6, generator=torch.Generator().manual_seed(3))
    assert torch.equal(x, model.decode_codes(codes))
