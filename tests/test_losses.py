import math

import torch

from genlab import losses


def test_recon_matches_hand_computation():
    x = torch.tensor([0.0, 1.0, 0.25]).view(1, 1, 1, 3)
    logits = torch.tensor([0.0, 2.0, -1.0]).view(1, 1, 1, 3)
    p = torch.sigmoid(logits).flatten()
    expected = -sum(xi * math.log(pi) + (1 - xi) * math.log(1 - pi) for xi, pi in zip([0, 1, 0.25], p.tolist(), strict=False))
    assert torch.allclose(losses.recon_nats(logits, x), torch.tensor([expected]), atol=1e-6)


def test_kl_is_zero_at_prior_and_matches_formula():
    zeros = torch.zeros(2, 3)
    assert torch.all(losses.kl_per_dim(zeros, zeros) == 0)
    mean, log_var = torch.tensor([[1.0]]), torch.tensor([[math.log(4.0)]])
    # KL(N(1, 4) || N(0, 1)) = 0.5 * (4 + 1 - 1 - ln 4)
    assert abs(losses.kl_per_dim(mean, log_var).item() - 0.5 * (4 - math.log(4))) < 1e-6


def test_neg_elbo_is_unweighted_and_loss_weighted():
    logits, x = torch.zeros(4, 1, 28, 28), torch.full((4, 1, 28, 28), 0.5)
    mean, log_var = torch.ones(4, 2), torch.zeros(4, 2)
    terms = losses.vae_terms(logits, x, mean, log_var, beta=3.0)
    assert torch.allclose(terms["kl"], torch.full((4,), 1.0))
    assert torch.allclose(terms["recon"], torch.full((4,), 784 * math.log(2)), atol=1e-3)
    assert torch.allclose(terms["neg_elbo"], terms["recon"] + 1.0)
    assert torch.allclose(terms["loss"], terms["recon"] + 3.0)


def test_gaussian_log_prob():
    z, mean, log_var = torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.tensor([[0.0]])
    expected = -0.5 * math.log(2 * math.pi) - 0.125
    assert abs(losses.gaussian_log_prob(z, mean, log_var).item() - expected) < 1e-6


def test_gan_losses_match_hand_computation():
    real, fake = torch.tensor([2.0, -1.0]), torch.tensor([0.0, 3.0])
    # ns: -log sigmoid(real) - log(1 - sigmoid(fake)), means over the batch; G: -log sigmoid(fake)
    log_sig = [math.log(1 / (1 + math.exp(-v))) for v in (2.0, -1.0)]
    d_ns = -sum(log_sig) / 2 + (math.log(2) + math.log(1 + math.exp(3.0))) / 2
    assert math.isclose(losses.discriminator_loss(real, fake, "ns").item(), d_ns, rel_tol=1e-6)
    g_ns = (math.log(2) + math.log(1 + math.exp(-3.0))) / 2
    assert math.isclose(losses.generator_loss(fake, "ns").item(), g_ns, rel_tol=1e-6)
    # hinge: mean relu(1 - real) + mean relu(1 + fake); G: -mean fake
    assert math.isclose(losses.discriminator_loss(real, fake, "hinge").item(), (0 + 2) / 2 + (1 + 4) / 2)
    assert losses.generator_loss(fake, "hinge").item() == -1.5


def test_iw_bound_matches_a_direct_computation_and_k1_is_the_single_sample_neg_elbo():
    torch.manual_seed(0)
    k, b, d = 5, 3, 2
    z_mean, z_log_var = torch.randn(b, d), torch.randn(b, d) * 0.3
    z = z_mean + (0.5 * z_log_var).exp() * torch.randn(k, b, d)
    log_p_x = -torch.rand(k, b) * 100
    direct = torch.zeros(b)
    for i in range(b):
        weights = []
        for j in range(k):
            prior = torch.distributions.Normal(0.0, 1.0).log_prob(z[j, i]).sum()
            q = torch.distributions.Normal(z_mean[i], (0.5 * z_log_var[i]).exp()).log_prob(z[j, i]).sum()
            weights.append(log_p_x[j, i] + prior - q)
        direct[i] = -(torch.logsumexp(torch.stack(weights), 0) - math.log(k))
    assert torch.allclose(losses.iw_nll_nats(log_p_x, z, z_mean, z_log_var), direct, atol=1e-4)
    one = losses.iw_nll_nats(log_p_x[:1], z[:1], z_mean, z_log_var)
    kl_sample = losses.gaussian_log_prob(z[0], z_mean, z_log_var) + 0.5 * (z[0].pow(2) + math.log(2 * math.pi)).sum(1)
    assert torch.allclose(one, -log_p_x[0] + kl_sample, atol=1e-4)  # recon + log q - log p of the one draw
