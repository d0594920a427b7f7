"""Jobs that turn data into versioned model artifacts (tokenizer, pretrain, SFT, DPO, distillation)."""
