"""A pretrained classification head, kept by label name: `ProsusAI/finbert` answers positive, negative, neutral
(in that order), Financial PhraseBank's labels are negative, neutral, positive. Passing the task's id2label to
`from_pretrained` would keep the weights and rename the classes by position; here the head's rows are reordered
to the task's labels instead, a label the head does not know gets a fresh row.

Used by hf.py and gpt2.py (models loaded with their own head, or a fresh one when the checkpoint has none).
"""


def head_layer(model):
    """(parent module, attribute name, Linear): the last Linear layer with one output per class."""
    import torch

    n = model.config.num_labels
    found = None
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and module.out_features == n:
            found = name
    if found is None:
        raise ValueError(f"{type(model).__name__} has no Linear layer with {n} outputs (its classification head)")
    parent_name, _, attr = found.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    return parent, attr, getattr(parent, attr)


def match_labels(head_labels: list[str], labels: list[str], label_map) -> dict[str, int]:
    """{task label: row of the pretrained head} for the head labels that name a task label, compared
    case-insensitively after the task's data.label_map (e.g. happy -> joy)."""
    mapping = {str(k).lower(): str(v).lower() for k, v in (label_map or {}).items()}
    task = {name.lower(): name for name in labels}
    rows = {}
    for row, name in enumerate(head_labels):
        key = str(name).strip().lower()
        target = task.get(mapping.get(key, key))
        if target is not None and target not in rows:
            rows[target] = row
    return rows


def fit_head(model, labels: list[str], label_map=None, source: str = "") -> dict:
    """Give `model` one output per task label, in the task's order: a row of its head whose label matches (by
    name, see match_labels) is kept, the others start fresh (normal(0, initializer_range), bias 0). Sets the
    config's labels to the task's. Returns {"from", "mapped": {task label: head label}, "new": [task labels]}."""
    import torch

    config = model.config
    head_labels = [str(config.id2label[i]) for i in range(config.num_labels)]
    rows = match_labels(head_labels, labels, label_map)
    parent, attr, old = head_layer(model)
    new = torch.nn.Linear(old.in_features, len(labels), bias=old.bias is not None).to(old.weight.device,
                                                                                    old.weight.dtype)
    with torch.no_grad():
        new.weight.normal_(0.0, float(getattr(config, "initializer_range", 0.02) or 0.02))
        if new.bias is not None:
            new.bias.zero_()
        for i, name in enumerate(labels):
            if name in rows:
                new.weight[i] = old.weight[rows[name]]
                if new.bias is not None:
                    new.bias[i] = old.bias[rows[name]]
    setattr(parent, attr, new)
    model.num_labels = config.num_labels = len(labels)  # the *ForSequenceClassification forward reads its own copy
    config.id2label = dict(enumerate(labels))
    config.label2id = {name: i for i, name in enumerate(labels)}
    config.problem_type = "single_label_classification"
    info = {"from": source, "mapped": {name: head_labels[rows[name]] for name in labels if name in rows},
            "new": [name for name in labels if name not in rows]}
    if rows:
        print(f"head: {source}'s classes ({', '.join(head_labels)}) kept by name, in the task's order: "
              + ", ".join(name if info["mapped"][name] == name else f"{name} (its {info['mapped'][name]})"
                          for name in info["mapped"]) + (f"; new: {', '.join(info['new'])}" if info["new"] else ""))
    return info
