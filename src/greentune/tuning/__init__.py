"""Fine-tuning methods: which parameters train (PEFT adapters, LayerNorm tuning, full, frozen)."""
