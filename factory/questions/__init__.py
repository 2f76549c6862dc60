"""Questions: the shipped sets and user files (`sets`), and questions written per topic by an LLM (`generate`)."""
