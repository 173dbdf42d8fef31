"""What a run may be, and the check that it is one: the wings found by scanning nlpexp/tasks/ and the config
search path (registry.py), the dataclasses every config node is typed by (schema.py: the shared loops and nodes;
each wing's own in its config.py) and composing and checking a run's config once before it runs (validate.py).
The YAML beside them is nlpexp/conf/."""
