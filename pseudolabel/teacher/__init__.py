"""Class-aware SAM teachers fine-tuned on the fully labelled images (seed 001 §3.1-3.5, §4.1)."""
