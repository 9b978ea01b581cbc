"""saescope's engine: models, corpus, SAEs and jobs. Never imports textual."""

__version__ = "0.1.0"
