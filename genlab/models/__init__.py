"""Plain nn.Modules: the VAE (encoder/decoder), the GAN built from them, the feature classifier."""
