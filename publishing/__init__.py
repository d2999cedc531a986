"""Taking adapters out of the store: to formats people run locally (GGUF for llama.cpp and
Ollama)."""
