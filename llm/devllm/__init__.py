"""A small, deterministic OpenAI-compatible server: the LLM of the embedded default, the tests and the bench.

Run it on its own with ``python -m llm.devllm --port 8001``. See docs/dev-llm.md for its behaviour knobs.
"""
