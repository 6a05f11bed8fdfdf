"""Offline demo models: synthetic tasks, their tokenizers, training, and `attnserve demo build`."""
