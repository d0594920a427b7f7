"""Non-generative baselines evaluated beside OneVision: the multi-stage cascade (MCA)."""
