"""Stock OpenAI-Realtime clients (each in its own venv) driven against the server."""
