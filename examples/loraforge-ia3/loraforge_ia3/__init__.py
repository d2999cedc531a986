"""LoRAForge trainer plugin: (IA)^3 through PEFT."""
