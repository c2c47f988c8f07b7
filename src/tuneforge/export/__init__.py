"""GGUF export for llama.cpp and Ollama: families, tokenizer, quantization, Modelfile, check."""
