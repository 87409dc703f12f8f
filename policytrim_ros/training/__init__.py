"""Training: behaviour cloning (``bc``, configured by ``bc_config.BCConfig``) and PolicyTrim's Stage 1/2
GRPO post-training (``trainer``, ``pipeline``)."""
