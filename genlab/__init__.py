"""genlab: a reproducible, MLflow-tracked study of VAEs and GANs (the lab 'VAE and GAN')."""

__version__ = "0.1.0"
