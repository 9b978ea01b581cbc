"""saescope's terminal app (Textual): screens and widgets over an engine client.

The app holds no science: it sends protocol requests to an engine process and
renders the replies. It never imports torch, transformer_lens or sae_lens; from
the engine package it imports only `engine.protocol`.
"""
