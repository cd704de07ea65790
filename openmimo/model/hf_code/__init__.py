"""Model code that openmimo writes next to every checkpoint's config.json, so that
``transformers.AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`` loads it (``auto_map``).
These files import only torch and transformers: they run without openmimo installed."""
