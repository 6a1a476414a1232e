"""The model provider: the configured models and their prices, the OpenAI-compatible client with its fallback,
moderation (provider.py); the dev LLM for the embedded default, tests and bench/ (devllm/, development tooling).
Imports only core."""
