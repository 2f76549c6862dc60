"""The LLM layer every LLM stage goes through: one backend interface, a request cache, constrained decoding."""
