import torch

from genlab import losses
from genlab.models.vae import VAE, reparameterize, sample_without_trick


def test_shapes_for_both_archs():
    for arch in ("conv", "mlp"):
        model = VAE(latent_dim=5, arch=arch)
        logits, z, mean, log_var = model(torch.rand(3, 1, 28, 28))
        assert logits.shape == (3, 1, 28, 28) and z.shape == mean.shape == log_var.shape == (3, 5)


def test_reparameterisation_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VAE(latent_dim=4)
    x = torch.rand(8, 1, 28, 28)
    mean, log_var = model.encoder.encode(x)
    recon = losses.recon_nats(model.decoder(reparameterize(mean, log_var)), x).mean()
    recon.backward()
    assert model.encoder.head.weight.grad.abs().sum() > 0


def test_without_the_trick_no_gradient_reaches_the_encoder():
    torch.manual_seed(0)
    model = VAE(latent_dim=4)
    x = torch.rand(8, 1, 28, 28)
    mean, log_var = model.encoder.encode(x)
    recon = losses.recon_nats(model.decoder(sample_without_trick(mean, log_var)), x).mean()
    recon.backward()
    assert model.encoder.head.weight.grad is None
    assert model.decoder.net[0].weight.grad.abs().sum() > 0


def test_reparameterize_is_seeded():
    mean, log_var = torch.zeros(2, 3), torch.zeros(2, 3)
    a = reparameterize(mean, log_var, torch.Generator().manual_seed(1))
    b = reparameterize(mean, log_var, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
