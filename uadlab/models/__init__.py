from uadlab.models.vae import VAE, LambertLoss, LossTerms, VAEOutput, elbo_loss, reconstruct

__all__ = ["VAE", "VAEOutput", "LossTerms", "elbo_loss", "LambertLoss", "reconstruct"]
