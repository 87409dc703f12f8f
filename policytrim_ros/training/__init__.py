"""Training: behaviour cloning now; PolicyTrim Stage 1/2 GRPO with issue #4."""
