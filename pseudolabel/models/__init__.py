"""Foundation-model adapters: SAM, class-aware prompt encoder, CLIP text, Grounding DINO."""
