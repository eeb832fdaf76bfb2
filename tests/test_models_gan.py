"""The GAN is built from the VAE's classes: a decoder's and an encoder trunk's weights load unchanged."""

import torch

from genlab.models.gan import Discriminator, Generator, generate
from genlab.models.vae import VAE, Decoder


def test_generator_is_the_decoder_class_and_loads_its_weights():
    assert Generator is Decoder
    for arch in ("conv", "mlp"):
        vae = VAE(latent_dim=5, arch=arch)
        generator = Generator(5, arch)
        generator.load_state_dict(vae.decoder.state_dict())
        z = torch.randn(3, 5)
        images = generate(generator, z)
        assert images.shape == (3, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
        assert torch.equal(images, torch.sigmoid(vae.decoder(z)))


def test_discriminator_takes_an_encoder_trunk():
    for arch in ("conv", "mlp"):
        vae = VAE(latent_dim=5, arch=arch)
        d = Discriminator(arch)
        d.trunk.load_state_dict(vae.encoder.trunk.state_dict())
        x = torch.rand(4, 1, 28, 28)
        assert torch.equal(d.features(x), vae.encoder.trunk(x))
        assert d(x).shape == (4,)


def test_spectral_norm_keeps_loaded_trunk_weights_and_bounds_each_layer():
    vae = VAE(latent_dim=5)
    d = Discriminator("conv")
    d.trunk.load_state_dict(vae.encoder.trunk.state_dict())
    d.use_spectral_norm().train()
    first = d.trunk[0]
    assert torch.equal(first.parametrizations.weight.original, vae.encoder.trunk[0].weight)
    x = torch.rand(8, 1, 28, 28)
    for _ in range(30):  # power iterations run in training forward passes
        d(x)
    for layer in (d.trunk[0], d.trunk[2], d.trunk[5], d.head):
        sigma = torch.linalg.matrix_norm(layer.weight.detach().flatten(1), ord=2)
        assert abs(float(sigma) - 1.0) < 0.05
    # a checkpoint of a normalised discriminator loads into one built normalised
    again = Discriminator("conv", spectral_norm=True)
    again.load_state_dict(d.state_dict())
    d.eval(), again.eval()
    assert torch.allclose(again(x), d(x)) and again.spectral_norm
    assert not Discriminator("conv").spectral_norm
