"""Texture models: the progressive GAN (`pggan`) and the linear PCA model (`linear`)."""
