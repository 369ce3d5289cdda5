"""Held-out likelihood conventions (dequantisation, bits/dim) and evaluate's skip reasons."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from conftest import tiny_data

from genlab import models
from genlab.data.spec import Data
from genlab.metrics import evaluate
from genlab.metrics.likelihood import nll_report


def test_dequantised_density_gets_d_log_l_and_bits_per_dim() -> None:
    data = tiny_data("image")
    deq = Data(data.spec, data.x_train, None, data.x_test, None, dequantize=True)
    per = torch.tensor([10.0, 12.0], dtype=torch.float64)
    values, note = nll_report(SimpleNamespace(discrete_likelihood=False), deq, per)
    expected = 11.0 + 64 * math.log(17)
    assert values["nll"] == pytest.approx(expected, rel=1e-12)
    assert values["bpd"] == pytest.approx(expected / (64 * math.log(2)), rel=1e-12)
    assert "dequantised" in note


def test_discrete_likelihood_needs_no_correction() -> None:
    per = torch.tensor([10.0, 12.0], dtype=torch.float64)
    values, _ = nll_report(SimpleNamespace(discrete_likelihood=True), tiny_data("image"), per)
    assert values["nll"] == 11.0 and values["bpd"] == pytest.approx(11 / (64 * math.log(2)))


def test_density_on_raw_grey_levels_is_not_called_an_nll() -> None:
    per = torch.tensor([-10.0, -12.0], dtype=torch.float64)
    values, note = nll_report(SimpleNamespace(discrete_likelihood=False), tiny_data("image"), per)
    assert "nll" not in values and "bpd" not in values and values["nll_density"] == -11.0
    assert "not a discrete NLL" in note


def test_continuous_data_reports_density_nll_without_bpd() -> None:
    per = torch.tensor([1.0, 3.0], dtype=torch.float64)
    values, _ = nll_report(SimpleNamespace(discrete_likelihood=False), tiny_data("vector"), per)
    assert values["nll"] == 2.0 and "bpd" not in values
    assert values["nll_se"] == pytest.approx(1.0)  # sample std sqrt(2) over sqrt(n = 2)


def test_evaluate_skips_what_a_model_cannot_do() -> None:
    data = tiny_data("vector")
    ae = models.build("ae", data.spec, latent_dim=2, hidden=(8,))
    report = evaluate(ae, data, ["nll", "recon"], n=10)
    assert "no likelihood" in report.skipped["nll"]
    assert report.values["recon_n"] == 10 and report.values["recon_mse"] > 0


def test_evaluate_is_reproducible_with_its_seed() -> None:
    data = tiny_data("vector")
    torch.manual_seed(0)
    vae = models.build("vae", data.spec, latent_dim=2, hidden=(8,))
    a = evaluate(vae, data, ["nll"], k=5, seed=1).values["nll"]
    b = evaluate(vae, data, ["nll"], k=5, seed=1).values["nll"]
    c = evaluate(vae, data, ["nll"], k=5, seed=2).values["nll"]
    assert a == b and a != c


def test_elbo_follows_the_nll_convention() -> None:
    data = tiny_data("image")
    deq = Data(data.spec, data.x_train, None, data.x_test, None, dequantize=True)
    torch.manual_seed(0)
    vae = models.build("vae", data.spec, latent_dim=2, hidden=(8,), arch="mlp")
    nll = evaluate(vae, deq, ["nll"], k=1, seed=3).values["nll"]
    elbo = evaluate(vae, deq, ["elbo"], seed=3).values["elbo"]
    # with k = 1 and the same noise the IWAE bound is -ELBO: both carry the D log L offset
    assert elbo == pytest.approx(-nll, rel=1e-9)
    assert nll > 64 * math.log(17) - 64  # the offset is there (density NLL alone would be small)
